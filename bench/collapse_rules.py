"""The collapse detector's error rates on labelled training runs.

    python bench/collapse_rules.py                 # the labelled set (RUNS, 52 runs), 2 processes
    python bench/collapse_rules.py --quick         # 6 cheap runs, one per outcome
    python bench/collapse_rules.py --rules '{"far_patience": 3, "min_diversity": 0.2}'  # + other thresholds
    python bench/collapse_rules.py --save runs.json   # then: --load runs.json replays without training
    python bench/collapse_rules.py --csv bench/results/collapse_rules.csv   # one row per run (not committed)

Every run of RUNS is trained to its end (``stop_on_collapse=False``) with ``ganlib.train.train``
and every evaluation is recorded. Each run is then LABELLED by its outcome at the end, from its
metrics only (``label``: the mean of the last 3 evaluations, and for digits the class histogram
of the committed digits classifier, which the detector never sees), never from the detector's
verdict. The settings are chosen to produce each outcome, but a setting does not decide its
label: two seeds of one setting can end differently.

The detector (``ganlib.collapse``) then reads each run's recorded evaluations, in order, as it
does inside ``train``: its first non-``ok`` verdict, the step and the rule that fired are
compared with the label. The verdict inside the run is checked against the replay (they must
agree), so thresholds other than the defaults (``--rules``, and the sensitivity table) are
measured on exactly the same runs without training again.

Errors: a **false positive** is a healthy run flagged collapsed or diverged; a **miss** is a
run labelled point, modes, far or diverged that stays ``ok`` (or only ``stalled``, which is a
normal early stop, not a failure). Runs labelled ``poor`` (finite and spread but neither healthy
nor one of the failures) count as neither.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from ganlib.config import GanConfig

# -- the labelled set -----------------------------------------------------------------------------
# Budgets: 1,500 generator steps on ring8, 2,000 on grid25 (small MLPs, z_dim 2), 600 on digits
# (DCGAN width 16), an evaluation every 100 (digits: 50) steps on 1,024 samples (digits: 359,
# the whole held-out set: more fails in the sliced W1). Each entry: name -> (config, seeds). The
# comments say what the settings were chosen for; the labels come from the runs.
RING8, GRID25, DIGITS = (dict(dataset="ring8", steps=1500, eval_every=100, eval_samples=1024),
                         dict(dataset="grid25", steps=2000, eval_every=100, eval_samples=1024),
                         dict(dataset="digits", steps=600, eval_every=50, eval_samples=359, width=16))
MLP = dict(width=128, depth=3)
# The WGAN-GP paper's toy settings (lambda 0.1, Adam betas 0.5, 0.9) with lr 5e-4, batch 64.
WGAN_GP_TOY = dict(loss="wgan_gp", gp_lambda=0.1, beta1=0.5, beta2=0.9, lr_g=5e-4, lr_d=5e-4, batch_size=64)
NS = dict(loss="gan_ns")  # DCGAN's Adam 2e-4, beta1 0.5, k = 1
SGD_HUGE = dict(optimizer="sgd", lr_g=10.0, lr_d=10.0)
# The minimax D far too strong (tests/test_training_behaviour.py): D(G(z)) -> 0, G's gradient vanishes.
MINIMAX_STRONG_D = dict(loss="gan_minimax", n_critic=10, lr_d=1e-2, lr_g=1e-5)

RUNS: dict[str, tuple[dict[str, Any], tuple[int, ...]]] = {
    # ring8
    "ring8 wgan_gp toy": (dict(RING8, **MLP, **WGAN_GP_TOY), (0, 1)),
    "ring8 gan_ns": (dict(RING8, **MLP, **NS), (0, 1, 2, 3, 4, 5)),  # seeds 0, 2: the far-from-data blob
    "ring8 gan_ns lr 1e-3": (dict(RING8, **MLP, **NS, lr_g=1e-3, lr_d=1e-3), (0, 1, 2, 3)),
    "ring8 gan_minimax": (dict(RING8, **MLP, loss="gan_minimax"), (0, 1, 2)),
    "ring8 gan_ns 2x32 lr 1e-3": (dict(RING8, width=32, depth=2, **NS, lr_g=1e-3, lr_d=1e-3), (0,)),
    # the hard cases: most seeds sit in a blob away from the data until step ~1,000; half of them
    # then spread onto the ring (late bloomers), the others stay there
    "ring8 gan_ns z64 lr 1e-3": (dict(RING8, **MLP, **NS, z_dim=64, lr_g=1e-3, lr_d=1e-3), tuple(range(10))),
    "ring8 gan_ns z64": (dict(RING8, **MLP, **NS, z_dim=64), (0, 1)),
    "ring8 gan_ns k5 lr 1e-3": (dict(RING8, **MLP, **NS, n_critic=5, lr_g=1e-3, lr_d=1e-3), (0,)),
    "ring8 gan_ns lr_g 1e-6": (dict(RING8, **MLP, **NS, lr_g=1e-6), (0,)),  # G stays at its initial blob
    "ring8 gan_ns lr_g 1e-2 lr_d 1e-4": (dict(RING8, **MLP, **NS, lr_g=1e-2, lr_d=1e-4), (0,)),
    "ring8 gan_ns lr 0.05": (dict(RING8, **MLP, **NS, lr_g=0.05, lr_d=0.05), (0,)),
    "ring8 minimax strong D": (dict(RING8, width=64, depth=3, **MINIMAX_STRONG_D, steps=600), (0,)),
    "ring8 gan_ns sgd 10": (dict(RING8, **MLP, **NS, **SGD_HUGE), (0,)),
    "ring8 wgan clip 10 lr 0.05": (dict(RING8, **MLP, loss="wgan", clip=10.0, lr_g=0.05, lr_d=0.05), (0,)),
    # grid25
    "grid25 wgan_gp toy": (dict(GRID25, **MLP, **WGAN_GP_TOY), (0,)),
    "grid25 gan_ns": (dict(GRID25, **MLP, **NS), (0, 1, 2)),
    "grid25 gan_ns k5 lr 1e-3": (dict(GRID25, **MLP, **NS, n_critic=5, lr_g=1e-3, lr_d=1e-3), (0,)),
    "grid25 gan_ns lr_g 1e-6": (dict(GRID25, **MLP, **NS, lr_g=1e-6), (0,)),
    "grid25 gan_ns lr_g 1e-2 lr_d 1e-4": (dict(GRID25, **MLP, **NS, lr_g=1e-2, lr_d=1e-4), (0,)),
    "grid25 gan_ns sgd 10": (dict(GRID25, **MLP, **NS, **SGD_HUGE), (0,)),
    # digits
    "digits gan_ns": (dict(DIGITS, **NS), (0, 1, 2)),
    "digits gan_ns lr 1e-3": (dict(DIGITS, **NS, lr_g=1e-3, lr_d=1e-3), (0,)),
    "digits gan_ns lr_g 1e-6": (dict(DIGITS, **NS, lr_g=1e-6), (0, 1)),
    "digits gan_ns lr_g 1e-2 lr_d 1e-4": (dict(DIGITS, **NS, lr_g=1e-2, lr_d=1e-4), (0, 1)),
    "digits gan_ns sgd 10": (dict(DIGITS, **NS, **SGD_HUGE), (0,)),
}
# --quick: seed 0 of six cheap settings, one per outcome (about 30-40 s on 2 quiet cores).
QUICK = ("ring8 gan_ns", "ring8 gan_ns lr 1e-3", "ring8 gan_ns k5 lr 1e-3", "ring8 gan_ns lr_g 1e-6",
         "ring8 gan_ns sgd 10", "digits gan_ns")

# -- the labelling rule ---------------------------------------------------------------------------
# Applied to the mean of the last TAIL evaluations (one evaluation is noisy); thresholds are
# fractions of the data's own values, so they read the same on every dataset. The failure
# thresholds lie in gaps between the outcomes measured (docs/metrics.md): the final primary
# metric is 0.59x the constant generator's or more for every failure, 0.55x or less otherwise;
# the effective number of modes of precise samples is at most 2.1 of 8 for the mode-collapsed
# runs, 3.2 or more for the others. The healthy / poor boundary is not in a gap (0.347x healthy,
# 0.355x poor): a poor run counts neither as a false positive nor as a miss.
TAIL = 3
BLOWN_RATIO = 100.0  # primary metric >= this x the constant generator's: the samples have blown up
POINT_DIVERSITY = 0.1  # fakes spread less than a tenth of the real data: one point
MODE_HQ = 0.1  # mixtures: at least this fraction of precise samples (within 3 std of a centre) ...
MODE_EFFECTIVE = 1 / 3  # ... whose mode histogram has an effective number (exp entropy) <= this x modes
CLASS_CONFIDENT = 0.5  # digits: at least this fraction of fakes classified with p >= 0.9 ...
CLASS_P = 0.9
FAR_RATIO = 0.6  # primary metric >= this x the constant generator's: no nearer the data than a point
HEALTHY_RATIO = 0.35  # healthy: primary <= this x the constant generator's ...
HEALTHY_DIVERSITY = 0.5  # ... diversity >= this ...
HEALTHY_COVERAGE = 0.5  # ... and at least half the modes (digits: classes, each >= 2 % of fakes) covered
LABELS = ("healthy", "modes", "point", "far", "diverged", "poor")
FAILURES = ("modes", "point", "far", "diverged")
VERDICTS = ("ok", "collapsed", "diverged")  # "stalled" counts as ok: a normal early stop


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def label(run: dict[str, Any]) -> tuple[str, str]:
    """The outcome of a run at its end, from its metrics only: (label, why)."""
    history, baseline, n_modes = run["history"], run["baseline"], run["n_modes"]
    last = history[-1]
    bad = sorted(k for k, v in last.items() if isinstance(v, float) and not math.isfinite(v))
    if bad or not run["params_finite"]:
        return "diverged", f"non-finite {', '.join(bad) or 'parameters'} at the end"
    tail = history[-TAIL:]
    ratio = _mean([m[run["primary"]] for m in tail]) / baseline
    diversity = _mean([m["diversity"] for m in tail])
    facts = f"{run['primary']} {ratio:.3g}x baseline, diversity {diversity:.3g}"
    if ratio >= BLOWN_RATIO:
        return "diverged", facts
    if diversity < POINT_DIVERSITY:
        return "point", facts
    if n_modes:
        hq = _mean([m["hq"] for m in tail])
        effective = _mean([n_modes * math.exp(-m["rkl"]) for m in tail])
        modes = _mean([m["modes"] for m in tail])
        facts += f", hq {hq:.2f}, modes {modes:.1f} (effective {effective:.1f}) of {n_modes}"
        if hq >= MODE_HQ and effective <= MODE_EFFECTIVE * n_modes:
            return "modes", facts
        covered = modes >= HEALTHY_COVERAGE * n_modes
    else:  # digits: the committed classifier's classes of the final generator's samples
        classes = run["classes"]
        facts += (f", {classes['confident']:.0%} classified, effective classes {classes['effective']:.1f}, "
                  f"{classes['covered']} of 10 covered")
        if classes["confident"] >= CLASS_CONFIDENT and classes["effective"] <= MODE_EFFECTIVE * 10:
            return "modes", facts
        covered = classes["covered"] >= HEALTHY_COVERAGE * 10
    if ratio >= FAR_RATIO:
        return "far", facts
    if ratio <= HEALTHY_RATIO and diversity >= HEALTHY_DIVERSITY and covered:
        return "healthy", facts
    return "poor", facts


def digit_classes(trainer, n: int = 1000) -> dict[str, float]:
    """Class histogram of ``n`` fakes by the committed digits classifier (the FID feature
    network's own head): the share classified with p >= CLASS_P, the effective number of classes
    among those (exp of the entropy) and the classes holding >= 2 % of them."""
    from ganlib.data.base import to_unit_range
    from ganlib.metrics.features import load_digits_features

    net = load_digits_features().net.eval()
    with torch.no_grad():
        x = trainer.sample(n).cpu()
        if not torch.isfinite(x).all():
            return {"confident": 0.0, "effective": 0.0, "covered": 0}
        p = torch.softmax(net(to_unit_range(x)), dim=1)
    confidence, cls = p.max(dim=1)
    counts = torch.bincount(cls[confidence >= CLASS_P], minlength=10).double()
    if counts.sum() == 0:
        return {"confident": 0.0, "effective": 0.0, "covered": 0}
    share = counts / counts.sum()
    nz = share[share > 0]
    return {"confident": float((confidence >= CLASS_P).double().mean()),
            "effective": float(torch.exp(-(nz * nz.log()).sum())), "covered": int((share >= 0.02).sum())}


# -- training ---------------------------------------------------------------------------------------
# Keys the evaluator adds after the detector's update: left out when the detector is replayed.
AFTER_VERDICT = ("status", "reason", "objective", "scored")


def train_one(job: tuple[str, dict[str, Any], int]) -> dict[str, Any]:
    """Train one run to its end; its evaluations, what the detector needs to replay them, and
    the facts its label needs."""
    from ganlib.train import train

    torch.set_num_threads(1)
    name, config, seed = job
    history: list[dict[str, Any]] = []
    params_ok: list[bool] = []
    context: dict[str, Any] = {}

    def observe(trainer, metrics, evaluator):
        params_ok.append(all(bool(torch.isfinite(p).all()) for p in trainer.generator.parameters()))
        context.update(baseline=evaluator.baseline, primary=evaluator.primary, saturating=trainer.loss.saturates,
                       n_modes=None if trainer.data.centers is None else len(trainer.data.centers))

    start = time.perf_counter()
    trainer = train(dict(config, seed=seed, device="cpu", stop_on_collapse=False),
                    report=lambda metrics, state: history.append(metrics), observers=[observe])
    run = {"name": name, "seed": seed, "dataset": config["dataset"], "history": history, "params_ok": params_ok,
           "params_finite": params_ok[-1], **context}
    run["classes"] = digit_classes(trainer) if config["dataset"] == "digits" else None
    run["seconds"] = time.perf_counter() - start
    return run


# -- the detector, replayed ------------------------------------------------------------------------
RULE_OF = (("non-finite", "non-finite"), ("beyond", "ceiling"), ("recent median", "blow-up"),
           ("saturated", "saturation"), ("mode collapse", "modes"), ("diversity", "diversity"),
           ("far from the data", "far"), ("stalled", "stall"))


def rule_of(reason: str) -> str:
    return next((rule for words, rule in RULE_OF if words in reason), "?")


def replay(run: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The detector over the run's evaluations in order: its first non-ok verdict."""
    from ganlib.collapse import CollapseDetector
    from ganlib.config import CollapseRules

    rules = CollapseRules.from_dict(overrides)
    detector = CollapseDetector(rules, run["primary"], run["baseline"], run["n_modes"], run["saturating"])
    for metrics, params_finite in zip(run["history"], run["params_ok"], strict=True):
        status, reason = detector.update({k: v for k, v in metrics.items() if k not in AFTER_VERDICT}, params_finite)
        if status != "ok":
            return {"status": status, "verdict": "ok" if status == "stalled" else status, "step": metrics["step"],
                    "rule": rule_of(reason), "reason": reason}
    return {"status": "ok", "verdict": "ok", "step": None, "rule": "", "reason": ""}


def in_run_verdict(run: dict[str, Any]) -> tuple[str, int | None]:
    first = next((m for m in run["history"] if m["status"] != "ok"), None)
    return (first["status"], first["step"]) if first else ("ok", None)


def errors(runs: list[dict[str, Any]], verdicts: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"false_positives": [], "misses": []}
    for run, v in zip(runs, verdicts, strict=True):
        if run["label"] == "healthy" and v["verdict"] != "ok":
            out["false_positives"].append(f"{run['id']} ({v['rule']} at {v['step']})")
        if run["label"] in FAILURES and v["verdict"] == "ok":
            out["misses"].append(run["id"])
    return out


# -- report ----------------------------------------------------------------------------------------
def confusion(runs: list[dict[str, Any]], verdicts: list[dict[str, Any]]) -> str:
    counts = Counter((r["label"], v["verdict"]) for r, v in zip(runs, verdicts, strict=True))
    head = "label / first verdict"
    lines = [f"{head:22}" + "".join(f"{v:>11}" for v in VERDICTS) + f"{'runs':>7}"]
    for lab in LABELS:
        n = sum(counts[lab, v] for v in VERDICTS)
        if n:
            lines.append(f"{lab:22}" + "".join(f"{counts[lab, v]:>11}" for v in VERDICTS) + f"{n:>7}")
    return "\n".join(lines)


def summary(runs: list[dict[str, Any]], overrides: dict[str, Any] | None) -> tuple[int, int, int]:
    verdicts = [replay(r, overrides) for r in runs]
    e = errors(runs, verdicts)
    failures = sum(r["label"] in FAILURES for r in runs)
    return len(e["false_positives"]), len(e["misses"]), failures


def train_all(quick: bool, processes: int) -> tuple[list[dict[str, Any]], float]:
    jobs = [(name, config, seed) for name, (config, seeds) in RUNS.items()
            for seed in ((0,) if quick else seeds) if not quick or name in QUICK]
    print(f"torch {torch.__version__}, CPU, {len(jobs)} runs in {processes} process(es) of 1 thread", flush=True)
    # Longest first: critic steps per run.
    jobs.sort(key=lambda job: -job[1]["steps"] * GanConfig.create(**job[1]).n_critic)
    start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    with multiprocessing.get_context("spawn").Pool(processes) if processes > 1 else _Serial() as pool:
        for run in pool.imap_unordered(train_one, jobs):
            run["id"] = f"{run['name']} s{run['seed']}"
            runs.append(run)
            print(f"  {run['seconds']:5.0f} s  {run['id']:40} {' '.join(label(run))}", flush=True)
    order = {name: i for i, name in enumerate(RUNS)}
    runs.sort(key=lambda r: (order[r["name"]], r["seed"]))
    return runs, time.perf_counter() - start


def margins(run: dict[str, Any]) -> tuple[int, float, float]:
    """After the warm-up, with the default thresholds: the longest streak of evaluations whose
    primary metric is at least ``far_factor`` x baseline, the lowest diversity, and the fewest
    modes covered (as a fraction of the modes) while ``mode_collapse_hq`` of the samples are precise
    (1 where that never happens, or for data without modes)."""
    from ganlib.config import CollapseRules

    rules = CollapseRules()
    streak = longest = 0
    diversity, modes = math.inf, 1.0
    for m in run["history"]:
        if m["step"] < rules.warmup_steps:
            continue
        far = m.get(run["primary"], math.nan) >= rules.far_factor * run["baseline"]
        streak = streak + 1 if far else 0
        longest = max(longest, streak)
        diversity = min(diversity, m.get("diversity", math.inf))
        if run["n_modes"] and m.get("hq", 0) >= rules.mode_collapse_hq:
            modes = min(modes, m["modes"] / run["n_modes"])
    return longest, diversity, modes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)} (seed 0)")
    parser.add_argument("--jobs", type=int, default=2, help="training processes, 1 torch thread each (default 2)")
    parser.add_argument("--rules", type=json.loads, action="append", default=[],
                        help="JSON CollapseRules overrides to replay besides the defaults (repeatable)")
    parser.add_argument("--save", type=Path, help="write the recorded runs here (JSON) to replay them later")
    parser.add_argument("--load", type=Path, help="replay runs recorded with --save instead of training")
    parser.add_argument("--csv", type=Path, help="write one row per run here (e.g. bench/results/collapse_rules.csv)")
    args = parser.parse_args()

    if args.load:
        saved = json.loads(args.load.read_text())
        runs, wall = saved["runs"], saved["wall"]
        print(f"{len(runs)} runs recorded in {args.load} (detector replayed with this checkout's rules)")
    else:
        runs, wall = train_all(args.quick, args.jobs)
    for run in runs:
        run["label"], run["why"] = label(run)
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps({"runs": runs, "wall": wall}))

    verdicts = [replay(r) for r in runs]
    for run, v in zip(runs, verdicts, strict=True):
        # the replay must be the detector inside the run (recorded runs: the rules of their day)
        status, step = in_run_verdict(run)
        if (status, step) != (v["status"], v["step"]):
            if not args.load:
                sys.exit(f"replay disagrees with the run for {run['id']}: {(status, step)} vs "
                         f"{(v['status'], v['step'])}")
            print(f"  {run['id']}: {status} at {step} when recorded, {v['status']} at {v['step']} now")

    print(f"\n{'run':40} {'label':9} {'first verdict':14} {'step':>5}  rule")
    for run, v in zip(runs, verdicts, strict=True):
        step = "" if v["step"] is None else v["step"]
        print(f"{run['id']:40} {run['label']:9} {v['status']:14} {step:>5}  {v['rule']}")
    print("\nconfusion matrix (default CollapseRules):")
    print(confusion(runs, verdicts))
    print("\nfirst flagged (step, by rule), per label:")
    for lab in LABELS:
        flagged = [(v["step"], v["rule"]) for r, v in zip(runs, verdicts, strict=True)
                   if r["label"] == lab and v["verdict"] != "ok"]
        if flagged:
            steps = [s for s, _ in flagged]
            rules = Counter(rule for _, rule in flagged)
            print(f"  {lab:9} {len(flagged)} runs, steps {min(steps)}-{max(steps)} (median "
                  f"{statistics.median(steps):g}); rules: " + ", ".join(f"{k} {n}" for k, n in rules.most_common()))
    e = errors(runs, verdicts)
    print(f"\nfalse positives (healthy runs flagged): {len(e['false_positives'])} of "
          f"{sum(r['label'] == 'healthy' for r in runs)}" + "".join(f"\n  {x}" for x in e["false_positives"]))
    print(f"misses (failed runs left ok): {len(e['misses'])} of {sum(r['label'] in FAILURES for r in runs)}"
          + "".join(f"\n  {x}" for x in e["misses"]))

    for overrides in args.rules:
        other = [replay(r, overrides) for r in runs]
        e = errors(runs, other)
        print(f"\nwith {json.dumps(overrides)}:\n{confusion(runs, other)}")
        print(f"false positives {len(e['false_positives'])}: {e['false_positives']}\nmisses {len(e['misses'])}: "
              f"{e['misses']}")

    print("\nsensitivity (one threshold changed from the defaults): false positives / misses")
    for key, values in SENSITIVITY.items():
        cells = []
        for value in values:
            fp, miss, _ = summary(runs, {key: value})
            cells.append(f"{value:g}: {fp}/{miss}")
        print(f"  {key:18} " + "   ".join(cells))

    print("\nmargins after the warm-up, per label: the longest streak of evaluations at >= far_factor x baseline, "
          "the lowest diversity, the fewest modes (fraction) covered while hq >= mode_collapse_hq")
    for lab in LABELS:
        chosen = [r for r in runs if r["label"] == lab and r["label"] != "diverged"]
        if chosen:
            streak, diversity, modes = (max((margins(r)[0], r["id"]) for r in chosen),
                                        min((margins(r)[1], r["id"]) for r in chosen),
                                        min((margins(r)[2], r["id"]) for r in chosen))
            print(f"  {lab:8} far streak {streak[0]} ({streak[1]}); diversity {diversity[0]:.3g} ({diversity[1]}); "
                  f"modes {modes[0]:.3g} ({modes[1]})")

    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["run", "seed", "dataset", "label", "why", "status", "step", "rule", "reason", "seconds"])
            for run, v in zip(runs, verdicts, strict=True):
                writer.writerow([run["name"], run["seed"], run["dataset"], run["label"], run["why"], v["status"],
                                 v["step"], v["rule"], v["reason"], f"{run['seconds']:.1f}"])
        print(f"\nwritten: {args.csv}")
    print(f"\n{len(runs)} runs, {wall:.0f} s wall clock ({sum(r['seconds'] for r in runs):.0f} s of training "
          f"and evaluation in {args.jobs} process(es))")


SENSITIVITY: dict[str, tuple[float, ...]] = {
    "far_factor": (0.75, 0.9, 1.0, 1.25),
    "far_patience": (3, 5, 6, 7, 8, 10),
    "min_diversity": (0.05, 0.1, 0.15, 0.2, 0.3),
    "min_mode_fraction": (0.125, 0.25, 0.5),
    "mode_collapse_hq": (0.05, 0.1, 0.2),
    "mode_patience": (1, 2, 3, 5),
    "warmup_steps": (300, 500, 800),
}


class _Serial:
    """Pool stand-in for --jobs 1: runs in this process."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def imap_unordered(fn, items):
        return map(fn, items)


if __name__ == "__main__":
    main()
