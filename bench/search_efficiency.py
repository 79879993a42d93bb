"""Does the pruning earn its keep? The best score found against the work spent, for three ways
of running the same sweep (same space, trial count, budget and seeds):

* ``random``: Optuna's random sampler, every trial to its budget (no scheduler, no collapse stop);
* ``tpe``: Optuna's TPE alone, every trial to its budget;
* ``default``: the platform's default, TPE + ASHA + collapse / stall stopping.

    python bench/search_efficiency.py                       # grid25, wgan_gp_lambda, 3 seeds (~40 min here)
    python bench/search_efficiency.py --seeds 0 --num-trials 8 --steps 500   # a quick look
    python bench/search_efficiency.py                       # again, after changing a default: reruns it alone
    python bench/search_efficiency.py --seeds 0 1 2 3 4 --rung-reduction 8   # a candidate schedule, live

``--first-rung`` / ``--rung-reduction`` run the default arm with another ASHA schedule (kept under
its own record, ``default-r<reduction>-f<first rung>-<seed>.json``, so the default's stays);
``--methods`` runs some arms only (``--methods random tpe`` records the full-budget sweeps that
``bench/asha_replay.py`` replays; the summary needs all three).

Each sweep's per-trial record is kept in ``--out``/trials and reused by a later call whose
settings (and, for the default, whose schedule: the plan's description) are the same, so a
change to the defaults reruns the default arm only; ``--rerun`` runs everything again.

Work is counted as the platform counts it: critic + generator steps (a generator step costs
n_critic critic steps) and trial seconds. For each sweep the trials are ordered by the time they
ended; after each one the cumulative work and the best score so far (healthy trials only: the
score is the trial's best mean w1 over 3 scored evaluations) give an anytime curve. Printed: the
final best of each method (mean over seeds), its work, and the goals: the default within 5 %
of random search's final best using at most 35 % of its work (read two ways: its final best and
its whole work, means over seeds; and per seed, the work it had spent when its best first came
within 5 % of random's final best), and the default ahead of TPE alone at equal work. The curves
go to a PNG and the numbers to a JSON file in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import time
from pathlib import Path

METHODS = {
    "random": dict(searcher="random", scheduler="none", collapse_stop=False),
    "tpe": dict(searcher="tpe", scheduler="none", collapse_stop=False),
    "default": dict(searcher="tpe", scheduler="asha", collapse_stop=True),
}
HEALTHY = ("completed", "stopped_early", "stalled")


def schedule_suffix(args) -> str:
    """What names the default arm's record and the summary's files when it was given another ASHA
    schedule ("-r8-fdefault"); empty for the platform's own."""
    if args.first_rung is None and args.rung_reduction is None:
        return ""
    return f"-r{args.rung_reduction or 'default'}-f{args.first_rung or 'default'}"


def arm_name(method: str, args) -> str:
    """The record's name: the method, and for the default arm the schedule it was given, if any."""
    return method + schedule_suffix(args) if method == "default" else method


def sweep_settings(method: str, seed: int, args, out: Path):
    from ganlib.settings import SweepSettings

    schedule = dict(first_rung=args.first_rung, rung_reduction=args.rung_reduction) if method == "default" else {}
    return SweepSettings(space=args.space, dataset=args.dataset, preset="default", num_trials=args.num_trials,
                         steps=args.steps, seed=seed, name=f"{arm_name(method, args)}-{seed}", device="cpu",
                         tracking_uri=f"sqlite:///{out}/mlflow.db", storage_path=str(out / "ray"),
                         max_concurrent=args.max_concurrent, confirm_top=0,  # the search alone is compared
                         **METHODS[method], **schedule)


def record_key(settings) -> dict:
    """What decides a sweep's outcome: its settings and the schedule the plan makes of them."""
    from ganlib.plan import plan_sweep
    from ganlib.spaces import load_space

    return {"space": settings.space, "dataset": settings.dataset, "num_trials": settings.num_trials,
            "steps": settings.steps, "seed": settings.seed, "max_concurrent": settings.max_concurrent,
            "plan": plan_sweep(settings, load_space(settings.space)).description,
            "collapse_stop": settings.collapse_stop}


def trials_of(method: str, seed: int, args, out: Path) -> list[dict]:
    """The sweep's per-trial record: reused from an earlier call with the same key, else run."""
    settings = sweep_settings(method, seed, args, out)
    key, path = record_key(settings), out / "trials" / f"{settings.name}.json"
    if path.exists() and not args.rerun and (saved := json.loads(path.read_text()))["key"] == key:
        print(f"{method} seed {seed}: reusing {path} (run {saved['ran']})")
        return saved["trials"]
    shutil.rmtree(settings.experiment_path, ignore_errors=True)  # an earlier sweep of the same name
    trials = run_method(settings, args.steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "ran": time.strftime("%Y-%m-%d %H:%M"), "trials": trials}, indent=1))
    return trials


def run_method(settings, steps: int) -> list[dict]:
    """One sweep; per trial (in the order trials ended): work done and its best healthy score."""
    from ray.tune import ExperimentAnalysis

    from ganlib.sweep import run_sweep
    from ganlib.tracking import trial_status

    run_sweep(settings)
    trials = []
    for df in ExperimentAnalysis(settings.experiment_path).trial_dataframes.values():
        last = df.iloc[-1].to_dict()
        status, _ = trial_status(last, steps, errored=False)
        trials.append({"ended": float(last["timestamp"]), "status": status,
                       "work_steps": float(last["critic_steps"] + last["step"]),
                       "work_seconds": float(last["time_total_s"]),
                       "score": float(last["objective"]) if status in HEALTHY else math.inf})
    return sorted(trials, key=lambda t: t["ended"])


def anytime(trials: list[dict]) -> list[tuple[float, float, float]]:
    """(cumulative steps, cumulative seconds, best score so far) after each trial."""
    steps = seconds = 0.0
    best, curve = math.inf, []
    for t in trials:
        steps, seconds, best = steps + t["work_steps"], seconds + t["work_seconds"], min(best, t["score"])
        curve.append((steps, seconds, best))
    return curve


def work_to_reach(curve, target: float, column: int = 0) -> float:
    """The work a method had spent when its best first came within ``target``; inf if never."""
    return next((c[column] for c in curve if c[2] <= target), math.inf)


def best_at(curve, work: float, column: int = 0) -> float:
    """The best score a method had found once it had spent ``work``."""
    reached = [c[2] for c in curve if c[column] <= work]
    return reached[-1] if reached else math.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="wgan_gp_lambda")
    parser.add_argument("--dataset", default="grid25")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-trials", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/search_efficiency"))
    parser.add_argument("--rerun", action="store_true", help="run every method again, ignoring earlier records")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS),
                        help="the arms to run (the summary needs all three)")
    parser.add_argument("--first-rung", type=int, help="the default arm's ASHA grace period (steps)")
    parser.add_argument("--rung-reduction", type=int, help="the default arm's ASHA reduction factor")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    import ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False)  # one Ray for every sweep
    curves: dict[str, list] = {m: [] for m in args.methods}
    for seed in args.seeds:
        for method in args.methods:
            curves[method].append(anytime(trials_of(method, seed, args, args.out)))
    ray.shutdown()
    if set(args.methods) != set(METHODS):
        print(f"recorded {', '.join(args.methods)}; the summary needs {', '.join(METHODS)}")
        return

    finals = {m: [c[-1] for c in cs] for m, cs in curves.items()}
    rows = {}
    for method, ends in finals.items():
        rows[method] = {"best": statistics.mean(e[2] for e in ends), "best_sd": statistics.pstdev(e[2] for e in ends),
                        "steps": statistics.mean(e[0] for e in ends), "seconds": statistics.mean(e[1] for e in ends)}
    random_, default = rows["random"], rows["default"]
    # per seed: the default's final best vs random's, its work vs random's, TPE's best at the default's work
    per_seed = []
    for r, t, d in zip(curves["random"], curves["tpe"], curves["default"], strict=True):
        per_seed.append({"default_vs_random_best": d[-1][2] / r[-1][2] - 1,
                         "default_work_fraction_steps": d[-1][0] / r[-1][0],
                         "default_work_fraction_seconds": d[-1][1] / r[-1][1],
                         "tpe_best_at_default_work": best_at(t, d[-1][0]), "default_best": d[-1][2],
                         # the goal read on the anytime curve: work until within 5 % of random's final best
                         "default_reach_fraction_steps": work_to_reach(d, 1.05 * r[-1][2]) / r[-1][0],
                         "default_reach_fraction_seconds": work_to_reach(d, 1.05 * r[-1][2], 1) / r[-1][1]})
    goals = {
        "within_5pct_of_random": default["best"] <= 1.05 * random_["best"],
        "at_most_35pct_of_random_work_steps": default["steps"] <= 0.35 * random_["steps"],
        "at_most_35pct_of_random_work_seconds": default["seconds"] <= 0.35 * random_["seconds"],
        "beats_tpe_at_equal_work": sum(p["default_best"] <= p["tpe_best_at_default_work"] for p in per_seed)
        > len(per_seed) / 2,
        "reaches_within_5pct_with_at_most_35pct_of_work_on_every_seed": all(
            p["default_reach_fraction_steps"] <= 0.35 for p in per_seed),
    }
    print(f"{args.space} on {args.dataset}: {args.num_trials} trials x {args.steps} steps, seeds {args.seeds}")
    print(f"{'method':10} {'best w1 (mean +- sd)':>22} {'work: steps':>14} {'trial-s':>9}")
    for method, row in rows.items():
        print(f"{method:10} {row['best']:>13.4f} +- {row['best_sd']:<6.4f} {row['steps']:>14,.0f} "
              f"{row['seconds']:>9.0f}")
    for p, seed in zip(per_seed, args.seeds, strict=True):
        print(f"seed {seed}: default best {p['default_vs_random_best']:+.1%} vs random, with "
              f"{p['default_work_fraction_steps']:.0%} of its steps ({p['default_work_fraction_seconds']:.0%} of its "
              f"seconds); TPE alone at the default's work: {p['tpe_best_at_default_work']:.4f} vs "
              f"{p['default_best']:.4f}")
        reach = p["default_reach_fraction_steps"]
        print("        " + (f"within 5 % of random's final best after {reach:.0%} of its steps "
                              f"({p['default_reach_fraction_seconds']:.0%} of its seconds)" if math.isfinite(reach)
                              else "never within 5 % of random's final best"))
    print("goals: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in goals.items()))
    stem = f"search_efficiency{schedule_suffix(args)}"  # a candidate schedule's own files
    (args.out / f"{stem}.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                       "methods": rows, "per_seed": per_seed, "goals": goals,
                                                       "curves": curves}, indent=1))
    _plot(curves, args.out / f"{stem}.png", f"{args.space} on {args.dataset}")
    print(f"curves: {args.out / f'{stem}.png'}")


def _plot(curves, path: Path, title: str) -> None:
    from ganlib.figures import new_figure, png

    fig, ax = new_figure(6, 4)
    colours = {"random": "0.5", "tpe": "tab:blue", "default": "tab:red"}
    for method, runs in curves.items():
        for i, curve in enumerate(runs):
            points = [(s, b) for s, _, b in curve if math.isfinite(b)]
            if points:
                ax.step(*zip(*points, strict=True), where="post", color=colours[method], alpha=0.8,
                        label=method if i == 0 else None)
    finals = [curve[-1][2] for runs in curves.values() for curve in runs if math.isfinite(curve[-1][2])]
    if finals:  # the region where the methods differ; the first pruned trials' early scores lie far above
        ax.set_ylim(0.95 * min(finals), 2 * max(finals))
    ax.set_xlabel("work: critic + generator steps (cumulative)")
    ax.set_ylabel("best score so far (w1)")
    ax.set_title(title, fontsize=9)
    ax.set_xscale("log")
    ax.legend(fontsize=8)
    path.write_bytes(png(fig))


if __name__ == "__main__":
    main()
