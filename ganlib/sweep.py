"""A search space -> Optuna (define-by-run) -> Ray Tune run, logged to MLflow.

Shared by every script in ``sweeps/`` (``sys.exit(main(["--space", NAME, *argv]))``) and by the
``ganlib-sweep`` command. In order:

1. pre-flight (``preflight.py``): flags, space, data, storage, tracking store, resources; a
   failure is one ``error:`` line and exit code 2, and nothing is written;
2. ``--resume``: find the sweep to continue (exit 2 if there is none, or it finished);
3. Ray (``cluster.py``): join ``--ray-address`` / ``$RAY_ADDRESS`` or start a private local one;
4. the MLflow parent run (new, or the resumed sweep's own);
5. the Tune run, as ``plan.py`` decides (scheduler, searcher, checkpoints), every trial logged
   by the driver (``tracking.py``);
6. the report on the parent run (``report.py``), written while Ray shuts down, the parent's
   final state, and a summary.

Exit codes: 0 when the sweep ran (some trials may have failed), 1 when every trial errored,
the sweep crashed, or ``--resume`` met Tune state it could not restore (parent run FAILED), 2
for a setting refused before the start, 130 when interrupted (parent run KILLED; ``--resume``
continues it).
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from typing import Any

import numpy as np

from .driver import Claim, SweepClaimed, identity, still_running
from .driver import parse as parse_driver
from .preflight import PreflightError, preflight
from .settings import SettingsError, SweepSettings, UsageError, resume_mismatches, settings_from_args
from .tune_state import RestoreFailed

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 1, 2, 130


class SweepFailed(Exception):
    """The sweep ran, but produced nothing usable (every trial errored)."""

    def __init__(self, summary: dict[str, Any]):
        self.summary = summary
        super().__init__("every trial errored")


class SweepInterrupted(Exception):
    def __init__(self, summary: dict[str, Any]):
        self.summary = summary
        super().__init__("interrupted")


def _resume_target(settings: SweepSettings, client, experiment_id: str | None):
    """The parent run of the sweep ``--resume`` continues; the settings take its name."""
    from .tracking import find_sweep_run

    parent = None
    if experiment_id is not None:
        if settings.name_given:
            parent = find_sweep_run(client, experiment_id, settings.name)
        else:
            runs = client.search_runs([experiment_id], filter_string=(  # the latest one not finished
                f"tags.ganlib_role = 'sweep' and tags.sweep_base = '{settings.base_name}' and "
                "tags.sweep_state != 'finished'"), max_results=1, order_by=["attributes.start_time DESC"])
            parent = runs[0] if runs else None
    if parent is None:
        which = f"named {settings.name!r}" if settings.name_given else f"of {settings.base_name!r} left unfinished"
        raise PreflightError(f"--resume: there is no sweep {which} in MLflow experiment {settings.experiment!r} at "
                             f"{settings.tracking_uri}; run without --resume to start one")
    settings.name = parent.data.tags["sweep_name"]
    return parent


def _check_resumable(settings: SweepSettings, parent) -> None:
    """Refuses a resume of a finished sweep, of one whose driver still runs, of one started with
    other settings, and of one without Tune state."""
    from ray import tune

    name, state = settings.name, parent.data.tags.get("sweep_state", "running")
    if state == "finished":
        raise PreflightError(f"--resume: sweep {name!r} finished: nothing to resume (start a new sweep without "
                             "--resume)")
    driver = parent.data.tags.get("driver", "")
    if state == "running" and driver:  # unfinished, and no driver has said it stopped
        who = parse_driver(driver)
        host, pid = (who.host, who.pid) if who else (driver, "?")
        alive = still_running(driver)
        if alive:
            raise PreflightError(f"--resume: sweep {name!r} is still running: its driver, PID {pid} on this machine, "
                                 "has not stopped (stop it first; --resume --name NAME continues another sweep)")
        if alive is None:
            print(f"warning: --resume: sweep {name!r} was last driven from {host} (PID {pid}), which cannot be "
                  "checked from here; if that driver still runs, stop this one: two drivers run the trials twice",
                  file=sys.stderr)
    differing = resume_mismatches(settings, parent.data.params)
    if differing:
        raise PreflightError(f"--resume: sweep {name!r} was started with other settings: {', '.join(differing)}; "
                             "resume it with the flags it was started with")
    if not tune.Tuner.can_restore(settings.experiment_path):
        raise PreflightError(f"--resume: sweep {name!r} has no Tune state under {settings.experiment_path} "
                             "(it was stopped before Tune saved any); start a new sweep")


def _claim(settings: SweepSettings) -> Claim | None:
    """This driver's claim on the sweep's Tune path, taken before the checks that a second driver
    of the same sweep must fail (see ``driver.py``); None where no claim could be written."""
    try:
        return Claim(settings.experiment_path)
    except OSError as err:  # no writable folder for claims: the sweep can run, unguarded
        print(f"warning: could not claim sweep {settings.name!r} for this driver ({err}); a second driver of it on "
              "this machine would not be refused (set GANLIB_DRIVER_CLAIMS to a writable folder)", file=sys.stderr)
        return None
    except SweepClaimed as err:
        who = parse_driver(err.holder.splitlines()[0])
        pid = who.pid if who else "?"
        raise PreflightError(f"sweep {settings.name!r} is being driven by another process on this machine (PID {pid}): "
                             "one sweep takes one driver (wait for it, or stop it first; another --name starts a "
                             "new sweep)") from None


def run_sweep(settings: SweepSettings) -> dict[str, Any]:
    """The whole sweep; returns its summary. Raises PreflightError (refused), SweepFailed,
    SweepInterrupted."""
    prepared = preflight(settings)
    from ray import tune

    from .tracking import client_for

    client = client_for(settings.tracking_uri)
    existing = client.get_experiment_by_name(settings.experiment)
    if settings.resume:
        parent = _resume_target(settings, client, existing.experiment_id if existing else None)
    claim = _claim(settings)
    try:
        parent_run_id = None
        if settings.resume:  # read again under the claim: a driver that held it may have changed it
            parent = client.get_run(parent.info.run_id)
            _check_resumable(settings, parent)
            parent_run_id = parent.info.run_id
        elif tune.Tuner.can_restore(settings.experiment_path):
            raise PreflightError(f"--name {settings.name!r}: a sweep of that name already exists under "
                                 f"{settings.storage_path}; --resume continues it, another --name starts a new one")
        return _run_claimed(settings, prepared, client, parent_run_id)
    finally:
        if claim is not None:
            claim.release()


def _run_claimed(settings: SweepSettings, prepared, client, parent_run_id: str | None) -> dict[str, Any]:
    from .cluster import check_joined_cluster, connect, warn_if_no_node_fits
    from .data import load_dataset
    from .plan import plan_sweep
    from .tracking import get_or_create_experiment, start_sweep_run

    plan = plan_sweep(settings, prepared.space)
    data = load_dataset(settings.dataset, settings.data_root)
    cluster = connect(settings)
    try:
        try:
            check_joined_cluster(settings, cluster)
        except SettingsError as err:
            raise PreflightError(str(err)) from None
        if not cluster.private:  # a private one was checked before it started
            warn_if_no_node_fits(settings)
        experiment_id = get_or_create_experiment(client, settings.experiment)
        if not settings.resume:
            parent_run_id = start_sweep_run(client, experiment_id, settings, prepared.space, plan.description)
        else:  # a resumed sweep runs again, in the runs table too (it was KILLED or FAILED)
            client.update_run(parent_run_id, status="RUNNING")
            client.set_tag(parent_run_id, "status", "running")
        client.set_tag(parent_run_id, "sweep_state", "running")
        client.set_tag(parent_run_id, "driver", identity())  # a --resume elsewhere checks that this one has stopped
        try:
            summary = _run_tune(settings, prepared, plan, data, client, experiment_id, parent_run_id, cluster)
        except SweepFailed:
            raise  # the parent run already says so
        except BaseException as err:
            state = "interrupted" if isinstance(err, (KeyboardInterrupt, SweepInterrupted)) else "crashed"
            _end_parent(client, parent_run_id, state, repr(err)[:500])
            raise
        return summary
    finally:
        cluster.close()


def _tune_run(settings, name: str, run, param_space: dict, logger, plan=None, search_alg=None, num_samples: int = 0):
    """One Tune run of the sweep (the search, or the confirmation stage): restored when the sweep
    resumes and Tune has its state, else new. Errored trials stay errored on a resume (their
    failure is a result), interrupted ones continue."""
    from ray import tune

    from .plan import CollapseStopper, trial_dirname
    from .tune_state import discard_staged_state, restoring, set_aside_unreadable_state, start_afresh_without_state

    path = f"{settings.storage_path.rstrip('/')}/{name}"
    if settings.resume:
        set_aside_unreadable_state(path)  # a killed driver can leave truncated state files, or none
        discard_staged_state(name)  # so Tune reads only what is left in the storage path
        start_afresh_without_state(path)  # nothing whole to restore: the stage runs again
        if tune.Tuner.can_restore(path):
            with restoring(logger.key, logger.tune_run):  # a failed restore raises instead of starting the run afresh
                return tune.Tuner.restore(path, run, resume_unfinished=True, resume_errored=False,
                                          param_space=param_space).fit()
    scheduler = plan.scheduler if plan else None
    tune_config = tune.TuneConfig(
        metric=plan.metric if plan else "objective", mode="min", search_alg=plan.search_alg if plan else search_alg,
        scheduler=scheduler, num_samples=(plan.num_samples or settings.num_trials) if plan else num_samples,
        max_concurrent_trials=plan.max_concurrent if plan else None,
        reuse_actors=plan.reuse_actors if plan else True, trial_dirname_creator=trial_dirname)
    run_config = tune.RunConfig(
        name=name, storage_path=settings.storage_path, stop=CollapseStopper() if settings.collapse_stop else None,
        callbacks=[logger, *((plan.callbacks or []) if plan else [])],
        failure_config=tune.FailureConfig(max_failures=settings.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=plan.num_to_keep if plan else 2), verbose=1)
    return tune.Tuner(run, param_space=param_space, tune_config=tune_config, run_config=run_config).fit()


def _run_tune(settings, prepared, plan, data, client, experiment_id: str, parent_run_id: str,
              cluster) -> dict[str, Any]:
    from .cohort import RUNGS_KEY
    from .report import build_report, member_results, optuna_record, trial_id_of_result, write_sweep_report
    from .tracking import SweepLogger, delete_orphan_runs
    from .tune import trainable

    space, base = prepared.space, dict(prepared.base, checkpoint_every=plan.checkpoint_every,
                                       checkpoint_steps=list(plan.checkpoint_steps))
    param_space = dict(base)
    if plan.population:  # PBT: every key of a starting config exists in the param space (None: unset)
        param_space.update({k: v for k, v in _keys_of(plan.population).items() if k not in param_space})
    tags = {"sweep_name": settings.name, "primary_metric": prepared.primary,
            "feature_extractor": prepared.feature_extractor}
    if plan.member_rungs:  # cohort trials consult the members' rungs in this actor
        param_space[RUNGS_KEY] = plan.member_rungs
    real_points = data.heldout[:2000].numpy() if data.sample_shape == (2,) else None
    logger = SweepLogger(settings.tracking_uri, experiment_id, parent_run_id, settings.steps, space.fields, tags,
                         plan.log_hparams, real_points)
    run = trainable(data, settings.cpus_per_trial, settings.gpus_per_trial, cohort=settings.cohort > 1,
                    extractor=prepared.extractor)
    # Schedulers draw from the driver's global RNGs (PBT's donors, Hyperband's brackets): seed them.
    random.seed(settings.seed)
    np.random.seed(settings.seed)
    started = time.time()
    results = member_results(_tune_run(settings, settings.name, run, param_space, logger, plan=plan))
    live = SweepLogger.live(parent_run_id) or logger  # a restored sweep ran the logger pickled with it
    undelivered = live.close()
    if settings.resume:
        delete_orphan_runs(client, experiment_id, parent_run_id, {trial_id_of_result(r) for r in results},
                           stage="search")
    built = build_report(results, space, settings, live.verdicts, prepared.primary, plan.description)
    summary = built["summary"]
    if summary["by_status"].get("interrupted"):
        summary.update(seconds=time.time() - started, parent_run_id=parent_run_id, experiment_id=experiment_id,
                       report=None, undelivered=undelivered)
        raise SweepInterrupted(summary)
    confirmation = None
    if settings.confirm_top and "best" in summary:
        run = trainable(data, settings.cpus_per_trial, settings.gpus_per_trial, cohort=settings.cohort > 1,
                        extractor=prepared.extractor)
        confirmation, confirm_rows, more = _confirm_stage(settings, prepared, plan, built, results, run, client,
                                                          experiment_id, parent_run_id, logger)
        undelivered += more
        if any(r["status"] == "interrupted" for r in confirm_rows):
            summary.update(seconds=time.time() - started, parent_run_id=parent_run_id, experiment_id=experiment_id,
                           report=None, undelivered=undelivered)
            raise SweepInterrupted(summary)
    cluster.close_in_background()  # the Tune runs are over: Ray stops while the report is written
    summary = write_sweep_report(client, parent_run_id, built, results, space, optuna_record(settings.experiment_path),
                                 confirmation)
    summary.update(seconds=time.time() - started, undelivered=undelivered, parent_run_id=parent_run_id,
                   experiment_id=experiment_id)
    if summary["trials"] and summary["by_status"].get("error", 0) == summary["trials"]:
        _end_parent(client, parent_run_id, "failed", "every trial errored")
        raise SweepFailed(summary)
    _end_parent(client, parent_run_id, "finished", "")
    return summary


def _keys_of(points: list[dict[str, Any]]) -> dict[str, Any]:
    """A param space holding every key of ``points``, nested ones too: Tune's generator only
    fills in keys the space has (None is GanConfig's "unset")."""
    out: dict[str, Any] = {}
    for point in points:
        for key, value in point.items():
            out[key] = {**out.get(key, {}), **_keys_of([value])} if isinstance(value, dict) else None
    return out


def _confirm_stage(settings, prepared, plan, built, results, run, client, experiment_id: str, parent_run_id: str,
                   search_logger) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[str]]:
    """The K best distinct healthy configurations, trained again on fresh seeds (``confirm.py``);
    in cohorts of up to ``--cohort`` members when the sweep's trials are cohorts."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from .confirm import (
        confirmation_cohorts,
        confirmation_configs,
        confirms,
        identity,
        pick_candidates,
        seeds_for,
        summarize,
    )
    from .report import member_results, trial_id_of_result
    from .tracking import SweepLogger, delete_orphan_runs, trial_status

    configs_by_trial = {trial_id_of_result(r): dict(r.config or {}) for r in results}
    candidates = pick_candidates(built["rows"], configs_by_trial, settings.confirm_top)
    configs = confirmation_configs(candidates, seeds_for(settings.seed, settings.confirm_seeds),
                                   settings.eval_samples, plan.checkpoint_every if not plan.population
                                   else settings.eval_every * max(1, settings.steps // 5 // settings.eval_every))
    name = f"{settings.name}-confirm"
    logger = SweepLogger(settings.tracking_uri, experiment_id, parent_run_id, settings.steps,
                         search_logger.searched, search_logger.tags, False, search_logger.real_points,
                         stage="confirm", confirms=confirms(candidates))
    if settings.cohort > 1:
        param_space = confirmation_cohorts(configs, settings.cohort, settings.max_concurrent)
        search = BasicVariantGenerator(max_concurrent=settings.max_concurrent or 0)
        trials = 1  # one of each cohort of the grid
    else:
        param_space = _keys_of(configs)
        search = BasicVariantGenerator(points_to_evaluate=configs, max_concurrent=settings.max_concurrent or 0)
        trials = len(configs)
    confirm_results = member_results(_tune_run(settings, name, run, param_space, logger, search_alg=search,
                                               num_samples=trials))
    live = SweepLogger.live(f"{parent_run_id}/confirm") or logger
    undelivered = live.close()
    if settings.resume:
        delete_orphan_runs(client, experiment_id, parent_run_id, {trial_id_of_result(r) for r in confirm_results},
                           stage="confirm")
    rows = []
    for result in confirm_results:
        last = result.metrics or {}
        status, _ = live.verdicts.get(trial_id_of_result(result)) or trial_status(last, settings.steps,
                                                                                  result.error is not None)
        finals = {k: float(v) for k, v in last.items() if k.startswith("final_") and isinstance(v, (int, float))}
        rows.append({"trial_id": trial_id_of_result(result), "identity": identity(result.config or {}),
                     "seed": (result.config or {}).get("seed"), "status": status,
                     "score": float(last.get("score", float("nan"))), **finals})
    confirmation = summarize(rows, candidates, prepared.primary)
    confirmation["runs"] = rows
    return confirmation, rows, undelivered


def _end_parent(client, run_id: str, state: str, reason: str) -> None:
    client.set_tag(run_id, "sweep_state", state)
    client.set_tag(run_id, "status", state)  # the runs table's status column shows the sweep's too
    if reason:
        client.set_tag(run_id, "sweep_end_reason", reason)
    client.set_terminated(run_id, {"finished": "FINISHED", "interrupted": "KILLED"}.get(state, "FAILED"))


# -- the command line ------------------------------------------------------------------------------
def ui_links(settings: SweepSettings, experiment_id: str, parent_run_id: str) -> tuple[str, list[str]]:
    """(how to open the UI, [training runs of this sweep, the sweep's report, the sweep run]). A new
    browser opens an experiment in MLflow 3.17's GenAI view: ``workflowType=machine_learning`` opens
    its "Model training" runs, ``searchFilter`` keeps this sweep's."""
    from urllib.parse import quote

    uri = settings.tracking_uri
    if uri.startswith("http"):
        root, how = uri.rstrip("/"), f"the tracking server at {uri}"
    else:
        root = "http://127.0.0.1:5000"
        how = f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"
    runs = (f"{root}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&searchFilter="
            + quote(f"tags.sweep_name = '{settings.name}'"))
    run = f"{root}/#/experiments/{experiment_id}/runs/{parent_run_id}"
    return how, [runs, f"{run}/artifacts/report/index.html", run]


def format_summary(settings: SweepSettings, summary: dict[str, Any], headline: str) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in summary["by_status"].items())
    lines = [f"\nSweep {settings.name!r} {headline} in {summary['seconds']:.0f} s: {summary['trials']} trials "
             f"({counts})", f"Schedule: {summary['schedule']}"]
    best = summary.get("best")
    if summary.get("confirmation"):
        from .confirm import describe

        lines.append(describe(summary["confirmation"]))
    if best:
        searched = {k: v for k, v in best["config"].items() if k in summary["searched"] or k == "loss"}
        lines.append(f"Best trial {best['trial_id']} ({best['status']}): {summary['primary']} score "
                     f"{best['score']:.4g} (mean of the last scored evaluations, best reached at step "
                     f"{best['best_step']:.0f}) with {json.dumps(searched)}")
    else:
        lines.append("No healthy trial: no best configuration.")
    work = summary["work"]
    saved = work["saved_fraction"]["seconds"]
    budget_seconds = max(work["total_done"]["seconds"] + work["total_saved"]["seconds"], 1e-9)
    by_cause = ", ".join(f"{cause} {v['seconds'] / budget_seconds:.0%}" for cause, v in work["saved"].items())
    lines.append(f"Work: {work['total_done']['seconds']:.0f} trial-seconds, {work['total_done']['generator_steps']:,} "
                 f"generator and {work['total_done']['critic_steps']:,} critic steps; stopping early saved an "
                 f"estimated {saved:.0%} of the trial time" + (f" ({by_cause})" if by_cause else ""))
    how, (runs_url, report_url, parent_url) = ui_links(settings, summary["experiment_id"], summary["parent_run_id"])
    lines += [f"MLflow experiment {settings.experiment!r} ({how}):", f"  the sweep's trials: {runs_url}",
              f"  its report page:    {report_url}", f"  the sweep run:      {parent_url}"]
    if summary.get("report"):
        lines.append(f"Report files: {summary['report']}")
    if summary.get("undelivered"):
        lines.append(f"MLflow: {len(summary['undelivered'])} calls could not be delivered "
                     f"({', '.join(sorted(set(summary['undelivered'])))}); Tune's results under "
                     f"{settings.experiment_path} are complete")
    return "\n".join(lines)


def one_line(err: Exception) -> str:
    """A refusal is one line, whatever a library put in its message."""
    return " ".join(part.strip() for part in str(err).splitlines() if part.strip())


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    for name in ("mlflow.store.db.utils", "alembic"):  # creating a local store is not news
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        settings = settings_from_args(argv, prog)
    except (SettingsError, UsageError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        summary = run_sweep(settings)
    except PreflightError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return EXIT_REFUSED
    except SweepFailed as err:
        print(format_summary(settings, err.summary, "FAILED"), file=sys.stderr)
        return EXIT_FAILED
    except RestoreFailed as err:
        print(f"error: --resume: {one_line(err)}. Tune's state is under {settings.experiment_path}; "
              "the log above has Tune's traceback", file=sys.stderr)
        return EXIT_FAILED
    except (SweepInterrupted, KeyboardInterrupt) as err:
        if isinstance(err, SweepInterrupted):
            print(format_summary(settings, err.summary, "was interrupted"), file=sys.stderr)
        print(f"Interrupted: continue it with the same command and --resume --name {settings.name}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(format_summary(settings, summary, "finished"))
    return EXIT_OK


def console_main() -> int:
    """``ganlib-sweep SPACE [flags]``: the same as ``python sweeps/SPACE.py [flags]``."""
    argv = sys.argv[1:]
    if not argv or argv[0].startswith("-"):
        print("usage: ganlib-sweep SPACE [flags]   (SPACE: a name in search_spaces/ or a YAML path; "
              "--help after it for the flags)", file=sys.stderr)
        return EXIT_REFUSED
    return main(["--space", argv[0], *argv[1:]], prog="ganlib-sweep SPACE")


if __name__ == "__main__":
    sys.exit(main())

