#!/usr/bin/env bash
# The GPU figures the open speed and cohort issues ask for, in one prepared run on a lent GPU
# machine (the device tool's `run`; each bench under its own timeout, 520 s in all, so that the
# run fits one call's 600 s).
#
# That machine's python3 holds torch, scipy, torchmetrics, pyarrow and scikit-learn but not POT or
# Optuna (these benches need neither Ray nor MLflow). Before the run, here, once:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl pot==0.9.7.post1 optuna==5.0.0 alembic==1.20.1 sqlalchemy==2.1.9 mako==1.4.3 \
#     colorlog==6.12.0 greenlet==3.5.6
# then run `bash bench/gpu_check.sh` there with carry [".whl"], timeout_s 600. Each bench's output
# lands in $OUT/<bench>.txt (bench/results/gpu here). DEVICE=cpu runs the same commands on the CPU.
set -u
OUT=${OUT:-bench/results/gpu}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
# POT imports jax / cupy / tensorflow backends when installed (seconds per process); ganlib hands it numpy only
export POT_BACKEND_DISABLE_JAX=1 POT_BACKEND_DISABLE_CUPY=1 POT_BACKEND_DISABLE_TENSORFLOW=1
PYTHON=${PYTHON:-python3}
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; "$PYTHON" -c 'import torch; print(torch.__version__)') \
  > "$OUT/machine.txt" 2>&1

bench() {  # bench NAME SECONDS ARGS...: one bench under its timeout, appended to $OUT/NAME.txt
  local name=$1 limit=$2
  shift 2
  echo "\$ python $*" >> "$OUT/$name.txt"
  timeout "$limit" "$PYTHON" "$@" >> "$OUT/$name.txt" 2>&1 || echo "(exit $?)" >> "$OUT/$name.txt"
}

# Issue "Speed": ganlib's step against a plain loop, eager and compiled (CUDA graphs).
bench trainer_step 110 bench/trainer_step.py --device "$DEVICE"
# (two cases, fewer rounds: each case compiles cold, and all six would not fit the limit)
bench trainer_step 100 bench/trainer_step.py --device "$DEVICE" --compile --compile-mode reduce-overhead \
  --cases "ring8 wgan_gp" "digits wgan_gp" --rounds 41
# Issue "Cohorts": aggregate throughput against K separate trainers (goal >= 8x at K = 32).
bench cohort_throughput 120 bench/cohort_throughput.py --device "$DEVICE" --sizes 1 8 32 --seconds 1 --rounds 2
# Evaluation share with and without the overlap, solo trials and cohorts (`auto` overlaps on CUDA).
bench eval_cost 100 bench/eval_cost.py --device "$DEVICE" --steps 1000 --datasets ring8 digits \
  --spaces wgan_clip gan_k --eval-overlap off on
bench cohort_eval 90 bench/cohort_eval.py --device "$DEVICE" --spaces wgan_clip --steps 500 --sizes 8 32 --rounds 1
ls -l "$OUT"
