"""How much of the cluster's time a sweep spends in its trials: slot efficiency.

    python bench/slot_efficiency.py                   # the default wgan_clip sweep (what `make run` runs)
    python bench/slot_efficiency.py -- --preset smoke # flags after -- go to the sweep

Runs the sweep in this process (its own private Ray), times its phases, and reads Tune's results:

* slot time: concurrent slots x the wall time of the Tune runs (the search, and the confirmation
  stage when it runs): the time the cluster is busy with the sweep;
* trial time: each trial's own run time (Tune's ``time_total_s``: building the run, training,
  evaluating, checkpointing), summed over trials;
* slot efficiency = trial time / slot time. The rest is trial start-up outside the trial (actor
  scheduling, the process and its imports when no actor is reused), Tune's own bookkeeping and
  slots left idle (the last trials of a stage, when fewer than the slots remain);
* the same against the whole command's wall time (imports, pre-flight, Ray start, report).
  Ray shuts down on a thread while the report is written; *shutdown wait* is what is left of
  the shutdown after the report.

Where the rest of the slot time goes, split by cause from the driver's view of each trial (the
sweep's own Tune callback, timed with the driver's clock): *outside the trial* is the time from
Tune starting the trial to its end that the trial did not count (the actor's first call, restoring
a reused actor, the last result's delivery); *tail* is slot time left idle once a stage's last
trial has started (a slot whose trial ends has nothing left to run); *first start* is each slot's
wait for its first trial of a stage (Tune's start, the first actors: a process and its imports);
*between trials* is the rest (a slot waiting for its next trial: actor scheduling, Optuna's suggestion, Tune's loop).

The trials' evaluation share comes from ``bench/eval_cost.py``; training-step time is trial time
minus that.
"""

from __future__ import annotations

import sys
import time

PHASES: dict[str, float] = {}
SPANS: dict[str, list[tuple[float, float]]] = {}  # label -> (start, end) of each call, driver clock
LIFETIMES: dict[str, list[float]] = {}  # trial id -> [started, ended], driver clock


def _timed(module, name: str, label: str):
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            ended = time.perf_counter()
            PHASES[label] = PHASES.get(label, 0.0) + ended - started
            SPANS.setdefault(label, []).append((started, ended))

    setattr(module, name, wrapper)


def _watch_trials(logger_class) -> None:
    """Record when Tune starts and ends each trial, through the sweep's own callback."""
    for hook, index in (("on_trial_start", 0), ("on_trial_complete", 1), ("on_trial_error", 1)):
        original = getattr(logger_class, hook)

        def wrapper(self, iteration, trials, trial, *args, _original=original, _index=index, **kwargs):
            LIFETIMES.setdefault(trial.trial_id, [None, None])[_index] = time.perf_counter()
            return _original(self, iteration, trials, trial, *args, **kwargs)

        setattr(logger_class, hook, wrapper)


def split_by_cause(slots: int, in_trial: dict[str, float]) -> dict[str, float]:
    """Slot-seconds of the Tune runs by cause (see the module's docstring)."""
    stages = SPANS.get("Tune runs", [])
    out = {"in the trial": 0.0, "outside the trial": 0.0, "first start": 0.0, "tail": 0.0, "between trials": 0.0}
    for start, end in stages:
        mine = {t: life for t, life in LIFETIMES.items() if life[0] is not None and start <= life[0] <= end}
        last_start = max((life[0] for life in mine.values()), default=end)
        out["first start"] += sum(sorted(life[0] - start for life in mine.values())[:slots])
        for trial_id, (began, ended) in mine.items():
            ended = ended if ended is not None else end
            inside = min(in_trial.get(trial_id, 0.0), ended - began)
            out["in the trial"] += inside
            out["outside the trial"] += ended - began - inside
            if ended >= last_start:
                out["tail"] += end - ended
    out["between trials"] = slots * sum(e - s for s, e in stages) - sum(out.values())  # the rest
    return out


def main(argv: list[str]) -> None:
    started = time.perf_counter()
    import ganlib.cluster
    import ganlib.preflight
    import ganlib.report
    import ganlib.sweep
    from ganlib.settings import settings_from_args

    PHASES["imports"] = time.perf_counter() - started
    for module, name, label in ((ganlib.sweep, "preflight", "pre-flight"), (ganlib.cluster, "connect", "Ray start"),
                                (ganlib.sweep, "_tune_run", "Tune runs"),
                                (ganlib.report, "write_sweep_report", "report"),
                                (ganlib.cluster.Cluster, "close", "shutdown wait")):
        _timed(module, name, label)
    import ganlib.tracking

    _watch_trials(ganlib.tracking.SweepLogger)
    settings = settings_from_args(["--space", "wgan_clip", *argv])
    summary = ganlib.sweep.run_sweep(settings)
    wall = time.perf_counter() - started

    from ray.tune import ExperimentAnalysis

    slots = settings.max_concurrent or 1
    trial_s, trials = 0.0, 0
    in_trial: dict[str, float] = {}
    for name in (settings.name, f"{settings.name}-confirm"):
        try:
            frames = ExperimentAnalysis(f"{settings.storage_path}/{name}").trial_dataframes.values()
        except Exception:  # noqa: BLE001 - no confirmation stage
            continue
        for df in frames:
            trial_s += float(df["time_total_s"].iloc[-1])
            in_trial[str(df["trial_id"].iloc[-1])] = float(df["time_total_s"].iloc[-1])
            trials += 1
    tune_wall = PHASES["Tune runs"]
    print(f"\nsweep {settings.name!r}: {trials} trials on {slots} slots, {wall:.0f} s in all")
    for label, seconds in PHASES.items():
        print(f"  {label:14} {seconds:7.1f} s")
    print(f"trial time {trial_s:.0f} s; slot time {slots} x {tune_wall:.0f} s = {slots * tune_wall:.0f} s")
    print(f"slot efficiency (Tune runs):       {trial_s / (slots * tune_wall):.1%}")
    print(f"slot efficiency (whole command):   {trial_s / (slots * wall):.1%}")
    print("slot time of the Tune runs by cause:")
    for cause, seconds in split_by_cause(slots, in_trial).items():
        print(f"  {cause:18} {seconds:7.1f} slot-s  {seconds / (slots * tune_wall):6.1%}")
    print(f"  (stages: {', '.join(f'{e - s:.0f} s' for s, e in SPANS.get('Tune runs', []))})")
    print(ganlib.sweep.format_summary(settings, summary, "finished"))


if __name__ == "__main__":
    main(sys.argv[1:][sys.argv[1:].index("--") + 1:] if "--" in sys.argv[1:] else [])
