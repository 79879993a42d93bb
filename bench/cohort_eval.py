"""A cohort trial's evaluation cost, with and without the evaluation overlap, side by side.

    python bench/cohort_eval.py                         # ring8, wgan_clip and gan_k, K = 4 and 8 (~6 min here)
    python bench/cohort_eval.py --spaces wgan_clip --sizes 8 --rounds 1

For each shipped space's first start point on ``--dataset`` (a whole ``default``-preset trial:
2,000 generator steps, a light evaluation every 100 steps, a scored one every 500 and at the ASHA
rungs, as ``bench/eval_cost.py`` sets it), K members differing in their learning rates train as
one cohort (``ganlib.cohort_run.train_cohort``) three ways, one after the other in each round:

* ``alone``: evaluated only at the last step (the training's own time, plus one evaluation);
* ``off``: every evaluation of every member in the training loop, one member after the other;
* ``on``: ``eval_overlap`` on: the members' evaluations on a pool of the trial's CPUs (one thread
  here, as a 1-CPU trial), concluded while the cohort trains on.

Printed: the wall time of each (median over ``--rounds``) and the evaluation share
``1 - alone / wall``. One torch thread, so the pool's thread has the machine's second core, as
it has the CPUs beside a GPU trial: the case ``auto`` overlaps.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from eval_cost import trial_config  # bench/ is on the path of a script run from it

from ganlib.cohort_run import train_cohort


def cohort_configs(space: str, dataset: str, k: int, steps: int, overlap: str, alone: bool,
                   device: str = "cpu") -> list[dict]:
    base = {**trial_config(space, dataset, steps, device), "eval_overlap": overlap}
    if alone:
        base.update(eval_every=steps, score_every=steps, checkpoint_every=steps, checkpoint_steps=[])
    return [dict(base, lr_d=base["lr_d"] * (1 + i / k), lr_g=base["lr_g"] * (1 + i / (2 * k)),
                 stop_on_collapse=False) for i in range(k)]  # every member trains to the end, every way


def wall(configs: list[dict]) -> float:
    started = time.perf_counter()
    train_cohort(configs, lambda latest, state: None)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", nargs="+", default=["wgan_clip", "gan_k"])
    parser.add_argument("--dataset", default="ring8")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (where `auto` overlaps)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a 1-CPU trial (Ray sets OMP_NUM_THREADS=1): the pool has one thread
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"torch {torch.__version__}, 1 thread, {where}; {args.dataset}, {args.steps} steps, default preset cadence")
    print(f"{'space':12} {'K':>3} {'alone s':>8} {'off s':>7} {'on s':>7} {'eval share off':>15} {'on':>6} "
          f"{'on / off':>9}")
    for space in args.spaces:
        for k in args.sizes:
            # warm-up: caches, the thread, kernels
            wall(cohort_configs(space, args.dataset, k, 100, "on", False, args.device))
            times: dict[str, list[float]] = {"alone": [], "off": [], "on": []}
            for _ in range(args.rounds):
                for way in times:
                    configs = cohort_configs(space, args.dataset, k, args.steps, "on" if way == "on" else "off",
                                             way == "alone", args.device)
                    times[way].append(wall(configs))
            alone, off, on = (statistics.median(times[w]) for w in ("alone", "off", "on"))
            print(f"{space:12} {k:>3} {alone:>8.1f} {off:>7.1f} {on:>7.1f} {1 - alone / off:>15.1%} "
                  f"{1 - alone / on:>6.1%} {on / off:>8.2f}x", flush=True)


if __name__ == "__main__":
    main()
