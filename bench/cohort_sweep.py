"""The default sweep with cohorts against without: ``python sweeps/wgan_clip.py --cohort K`` for
each K given (default 1 and 8), one after the other, same seed, same machine.

    python bench/cohort_sweep.py                       # the default wgan_clip sweep, K = 1 then 8 (~10 min here)
    python bench/cohort_sweep.py --cohorts 1 4 8 -- --preset smoke   # flags after -- go to the sweep

Printed per K: the whole command's wall time, the trials by status, the search's best score,
and the confirmed best with its 95 % interval (the confirmation stage trains the top
configurations alone on fresh seeds, whatever K). The answers are equally good when the
confirmed bests' intervals overlap.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(k: int, out: Path, extra: list[str]) -> dict:
    name = f"cohort-{k}-{time.strftime('%H%M%S')}"
    argv = [sys.executable, str(REPO / "sweeps" / "wgan_clip.py"), "--cohort", str(k), "--name", name,
            "--tracking-uri", f"sqlite:///{out}/mlflow.db", "--storage-path", str(out / "ray"), *extra]
    started = time.time()
    proc = subprocess.run(argv, capture_output=True, text=True)
    wall = time.time() - started
    if proc.returncode != 0:
        raise SystemExit(f"--cohort {k} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    experiment = client.get_experiment_by_name("ganlib-wgan_clip")
    [parent] = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.sweep_name = '{name}' and tags.ganlib_role = 'sweep'")
    summary = json.loads(Path(client.download_artifacts(parent.info.run_id, "report/summary.json")).read_text())
    return {"k": k, "wall_s": wall, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohorts", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--out", type=Path, default=Path("bench/results/cohort_sweep"))
    parser.add_argument("sweep_flags", nargs="*", help="after --: flags for sweeps/wgan_clip.py")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [run(k, args.out, args.sweep_flags) for k in args.cohorts]
    print(f"{'K':>3} {'wall s':>7} {'trials by status':<42} {'search best':>11}  confirmed best (95 % interval)")
    for row in rows:
        s = row["summary"]
        by_status = ", ".join(f"{n} {c}" for c, n in s["by_status"].items())
        confirmed = (s.get("confirmation") or {}).get("rows") or []
        first = confirmed[0] if confirmed else None
        text = (f"{first['mean']:.4f} ({first['interval'][0]:.4f} to {first['interval'][1]:.4f})" if first
                else "(no confirmation stage)")
        best = s.get("best", {}).get("score", float("nan"))
        print(f"{row['k']:>3} {row['wall_s']:>7.0f} {by_status:<42} {best:>11.4f}  {text}")
    (args.out / "summary.json").write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
