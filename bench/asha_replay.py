"""Which ASHA schedule? Replays candidate rungs on the full-budget sweeps that
``bench/search_efficiency.py`` recorded (its ``random`` and ``tpe`` arms, every trial to its budget).

    python bench/search_efficiency.py --methods random tpe   # first: records the sweeps
    python bench/asha_replay.py                 # then: rank correlations and replayed schedules

Per recorded sweep it prints how well a trial's objective at each scored step (100, 500, 1,000,
1,500) ranks the trials' final objectives (Spearman), then, for each candidate schedule, the work
ASHA would have spent and the best objective it would have kept. The replay feeds the trials to
one ASHA bracket in the order they ended, each compared at a rung with those recorded there
before it (Ray's rule: stop if worse than the 1 - 1/reduction quantile of the rung's record; the
first at a rung goes on), so it ignores two things a live sweep has: two trials running at once,
and TPE choosing later trials from the values pruning gives it. A rung between the recorded
scored steps sees the last scored objective, where a live sweep scores at every rung. The live measurement of the
chosen schedule is ``bench/search_efficiency.py``'s; this only says which schedules are worth it.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

SCHEDULES = {  # name: (rungs, reduction)
    "500, 1000 / 2 (before)": ([500, 1000], 2),
    "500 / 4": ([500], 4),
    "100, 500, 1000 / 2": ([100, 500, 1000], 2),
    "100, 500 / 3": ([100, 500], 3),
    "100, 500 / 4": ([100, 500], 4),
    "100, 500 / 5 (until now)": ([100, 500], 5),
    "100, 1000 / 3": ([100, 1000], 3),
    "100, 500, 1500 / 3": ([100, 500, 1500], 3),
    "100, 500 / 8": ([100, 500], 8),
    "100, 1000 / 8": ([100, 1000], 8),
    # what Ray builds from a 100-step grace period (rung k at 100 x reduction^k); rungs between
    # scored steps see the last scored objective here, a live sweep scores at every rung
    "100, 800 / 8 (Ray, now)": ([100, 800], 8),
    "100, 400, 1600 / 4 (Ray)": ([100, 400, 1600], 4),
    "100, 300, 900 / 3 (Ray)": ([100, 300, 900], 3),
    "100, ..., 1600 / 2 (Ray)": ([100, 200, 400, 800, 1600], 2),
}


def full_budget_trials(experiment: Path):
    """The sweep's trials that ran their whole budget, as progress frames indexed by step, in the
    order they ended."""
    import pandas as pd

    frames = [pd.read_csv(p).set_index("step") for p in sorted(experiment.glob("trial_*/progress.csv"))]
    steps = max(int(f.index[-1]) for f in frames)
    return sorted((f for f in frames if int(f.index[-1]) == steps), key=lambda f: f["timestamp"].iloc[-1]), steps


def objective_at(frame, step: int) -> float:
    return float(frame["objective"].loc[:step].iloc[-1])


def replay(frames, steps: int, rungs: list[int], reduction: int) -> tuple[float, float]:
    """(work as a fraction of running every trial to its budget, best objective kept)."""
    recorded: dict[int, list[float]] = {r: [] for r in rungs}
    work = full = 0.0
    best = math.inf
    for frame in frames:
        per_step = (frame["critic_steps"].iloc[-1] + steps) / steps  # critic + generator steps per step
        stop = steps
        for rung in rungs:
            value = objective_at(frame, rung)
            cutoff = np.nanpercentile(recorded[rung], 100 / reduction) if recorded[rung] else None
            recorded[rung].append(value)
            if cutoff is not None and value > cutoff:  # lower is better: kept only in the best 1/reduction
                stop = rung
                break
        work, full = work + stop * per_step, full + steps * per_step
        best = min(best, objective_at(frame, stop))
    return work / full, best


def main() -> None:
    from scipy.stats import spearmanr

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/search_efficiency"),
                        help="search_efficiency.py's --out")
    args = parser.parse_args()
    experiments = sorted(p for p in (args.out / "ray").glob("*-*") if p.name.split("-")[0] in ("random", "tpe")
                         and (args.out / "trials" / f"{p.name}.json").exists())  # finished sweeps only
    if not experiments:
        parser.error(f"no random-* or tpe-* sweeps under {args.out / 'ray'}: run bench/search_efficiency.py first")
    rows = {name: [] for name in SCHEDULES}
    for experiment in experiments:
        frames, steps = full_budget_trials(experiment)
        final = [objective_at(f, steps) for f in frames]
        ranks = "  ".join(f"{s}: {spearmanr([objective_at(f, s) for f in frames], final)[0]:.2f}"
                          for s in (100, 500, 1000, 1500) if s < steps)
        print(f"{experiment.name}: {len(frames)} trials, best {min(final):.4f}; rank correlation with the final "
              f"objective at step {ranks}")
        for name, (rungs, reduction) in SCHEDULES.items():
            work, best = replay(frames, steps, rungs, reduction)
            rows[name].append((work, best / min(final) - 1))
    print(f"\n{'rungs / reduction':24} {'work (mean, max)':>18} {'best vs full (mean, worst)':>28}")
    for name, results in rows.items():
        works, losses = zip(*results, strict=True)
        print(f"{name:24} {np.mean(works):>9.0%} {max(works):>7.0%} {np.mean(losses):>+17.1%} {max(losses):>+9.1%}")


if __name__ == "__main__":
    main()
