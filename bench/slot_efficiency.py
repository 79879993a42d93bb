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

The trials' evaluation share comes from ``bench/eval_cost.py``; training-step time is trial time
minus that.
"""

from __future__ import annotations

import sys
import time

PHASES: dict[str, float] = {}


def _timed(module, name: str, label: str):
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            PHASES[label] = PHASES.get(label, 0.0) + time.perf_counter() - started

    setattr(module, name, wrapper)


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
                                (ganlib.cluster.Cluster, "close", "Ray shutdown")):
        _timed(module, name, label)
    settings = settings_from_args(["--space", "wgan_clip", *argv])
    summary = ganlib.sweep.run_sweep(settings)
    wall = time.perf_counter() - started

    from ray.tune import ExperimentAnalysis

    slots = settings.max_concurrent or 1
    trial_s, trials = 0.0, 0
    for name in (settings.name, f"{settings.name}-confirm"):
        try:
            frames = ExperimentAnalysis(f"{settings.storage_path}/{name}").trial_dataframes.values()
        except Exception:  # noqa: BLE001 - no confirmation stage
            continue
        for df in frames:
            trial_s += float(df["time_total_s"].iloc[-1])
            trials += 1
    tune_wall = PHASES["Tune runs"]
    print(f"\nsweep {settings.name!r}: {trials} trials on {slots} slots, {wall:.0f} s in all")
    for label, seconds in PHASES.items():
        print(f"  {label:14} {seconds:7.1f} s")
    print(f"trial time {trial_s:.0f} s; slot time {slots} x {tune_wall:.0f} s = {slots * tune_wall:.0f} s")
    print(f"slot efficiency (Tune runs):       {trial_s / (slots * tune_wall):.1%}")
    print(f"slot efficiency (whole command):   {trial_s / (slots * wall):.1%}")
    print(ganlib.sweep.format_summary(settings, summary, "finished"))


if __name__ == "__main__":
    main(sys.argv[1:][sys.argv[1:].index("--") + 1:] if "--" in sys.argv[1:] else [])
