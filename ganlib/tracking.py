"""MLflow, from the sweep driver only: one parent run per sweep, one child run per trial.

Trials never talk to MLflow. The driver sees every result, checkpoint and end of a trial
through Tune (``SweepLogger``, a Tune callback) and hands the MLflow calls to one background
thread (``TrackingQueue``), which applies them in order and retries through an outage of the
tracking server: training never waits on MLflow, and metrics logged during an outage arrive
afterwards. What could not be delivered by the end of the sweep is listed in its summary; Tune's
own results hold everything regardless. Consequences worth knowing:

* a trial restarted from a checkpoint (a lost worker, a resumed sweep) continues its own child
  run, and steps already logged are not logged again (each run's metric history has one value
  per step; the tag ``replayed_results`` counts the results trained again and not logged);
* a local SQLite store works on a multi-node cluster: only the driver writes to it;
* under PBT, a trial's config changes when it exploits another: the new values are logged as
  metrics ``hp_<name>`` at every step, from the first step trained under them, and as
  ``config/step_<N>.json`` (params are immutable).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import queue
import threading
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from .cohort import MEMBER_ERROR, MEMBERS_KEY, cohort_base, member_id, members_of
from .config import SHORTHANDS, GanConfig, expand_shorthand
from .tune_state import check_restored

logger = logging.getLogger(__name__)

TRIAL_ID_TAG = "ray_trial_id"
PARENT_TAG = "mlflow.parentRunId"
STATUSES = ("completed", "stopped_early", "stalled", "collapsed", "diverged", "error", "interrupted")
FAMILIES = {pair: name for name, pair in SHORTHANDS.items()}
ABBREVIATIONS = {"clip": "c", "n_critic": "k", "gp_lambda": "lambda", "beta1": "b1", "beta2": "b2",
                 "momentum": "m", "d_norm": "norm"}
_LIVE: dict[str, SweepLogger] = {}  # parent run id -> the logger Tune is running (see SweepLogger.setup)


# -- small helpers -----------------------------------------------------------------------------------
def client_for(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def local_artifact_root(uri: str) -> str | None:
    """For a local SQLite store, an absolute artifact folder beside the database (MLflow's
    default is ./mlruns of whichever process creates the experiment)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    return None


def get_or_create_experiment(client, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=local_artifact_root(client.tracking_uri))


# Tune's bookkeeping in every result: not the run's metrics (MLflow's columns and charts stay ours)
TUNE_KEYS = ("timestamp", "training_iteration", "time_this_iter_s", "time_total_s", "pid", "time_since_restore",
             "iterations_since_restore", "done", "should_checkpoint")


def numeric_metrics(metrics: dict[str, Any], first: str | None = None) -> dict[str, float]:
    """The loggable entries: finite numbers (status, reason, flags and Tune's bookkeeping are not
    metrics), ``first`` first: MLflow's compare view plots the first metric a run logged."""
    out = {k: float(v) for k, v in metrics.items() if k not in TUNE_KEYS
           and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    return {first: out.pop(first)} | out if first in out else out


def log_metrics(client, run_id: str, metrics: dict[str, Any], step: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, v, now, step) for k, v in numeric_metrics(metrics).items()]
    for i in range(0, len(batch), 1000):  # MLflow's batch limit
        client.log_batch(run_id, metrics=batch[i:i + 1000])


def log_params(client, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in sorted(params.items()) if v is not None])


def log_bytes(client, run_id: str, data: bytes, artifact_path: str) -> None:
    import tempfile

    folder, name = artifact_path.rsplit("/", 1) if "/" in artifact_path else ("", artifact_path)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / name).write_bytes(data)
        client.log_artifact(run_id, str(Path(tmp) / name), folder or None)


def family(config: dict[str, Any]) -> str:
    """The algorithm by its paper's name where it is one (wgan, wgan_gp, gan_ns, gan_minimax),
    else loss+constraint."""
    try:
        axes = expand_shorthand({k: config.get(k) for k in ("loss", "constraint") if config.get(k) is not None})
    except ValueError:
        return str(config.get("loss"))
    pair = (axes.get("loss"), axes.get("constraint") or "none")
    return FAMILIES.get(pair, f"{pair[0]}+{pair[1]}")


def run_name(config: dict[str, Any], searched: tuple[str, ...], prefix: str = "") -> str:
    """What a trial is, at a glance: its family and the searched values, e.g.
    ``wgan c=0.00345 k=8 lr_g=0.0011 lr_d=0.00011 rmsprop``."""
    parts = [prefix + family(config)] if prefix else [family(config)]
    words = []
    for name in searched:
        value = config.get(name)
        if name in ("loss", "constraint") or value is None:
            continue
        if name == "optimizer":
            words.append(str(value))
        elif isinstance(value, float):
            parts.append(f"{ABBREVIATIONS.get(name, name)}={value:.3g}")
        else:
            parts.append(f"{ABBREVIATIONS.get(name, name)}={value}")
    return " ".join(parts + words)


def trial_status(last: dict[str, Any] | None, steps: int, errored: bool, finished: bool = True) -> tuple[str, str]:
    """A trial's verdict from its last result: ``finished`` is False for a trial that was still
    running or waiting when the sweep was interrupted."""
    last = last or {}
    step = int(last.get("step", 0))
    if last.get("status") == MEMBER_ERROR:  # a cohort member's own exception: its reason, not a generic one
        return MEMBER_ERROR, last.get("reason", "")
    if errored:
        return "error", f"the trial raised an error after step {step}"
    if last.get("status") in ("collapsed", "diverged", "stalled"):
        return last["status"], last.get("reason", "")
    if step >= steps:
        return "completed", ""
    if not finished:
        return "interrupted", f"the sweep was interrupted at step {step} of {steps}"
    return "stopped_early", f"stopped by the scheduler at step {step} of {steps}"


def delete_orphan_runs(client, experiment_id: str, parent_run_id: str, trial_ids: set[str], stage: str) -> int:
    """Child runs of no trial of the sweep: a driver killed after creating a trial but before
    Tune saved it leaves a run whose trial the resumed sweep creates again under a new id (with
    the same config: the searcher's state was saved with the experiment). Deleted (MLflow's
    soft delete), so every trial has exactly one child run."""
    runs = client.search_runs([experiment_id], filter_string=(
        f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.stage = '{stage}'"), max_results=5000)
    orphans = [r for r in runs if r.data.tags.get(TRIAL_ID_TAG) not in trial_ids]
    for run in orphans:
        client.delete_run(run.info.run_id)
    return len(orphans)


def find_trial_run(client, experiment_id: str, parent_run_id: str, trial_id: str) -> str | None:
    runs = client.search_runs([experiment_id], filter_string=(
        f"tags.{TRIAL_ID_TAG} = '{trial_id}' and tags.`{PARENT_TAG}` = '{parent_run_id}'"), max_results=1)
    return runs[0].info.run_id if runs else None


# -- the background thread -----------------------------------------------------------------------------
class TrackingQueue:
    """One thread owns the driver's MLflow client; ``put(fn, *args)`` queues ``fn(client, *args)``.
    A call that fails is retried with backoff until it succeeds (the tracking server may be down
    for a while); a call MLflow rejects as invalid is dropped and noted. ``close(timeout)`` waits
    for the queue to drain and returns what was not delivered."""

    RETRY_BACKOFF_S = (1, 2, 5, 10, 20, 30)

    def __init__(self, uri: str):
        self.uri = uri
        self._items: queue.Queue = queue.Queue()
        self._give_up = threading.Event()
        self.failures: list[str] = []  # calls MLflow rejected (never retried)
        self._thread = threading.Thread(target=self._run, name="mlflow-tracking", daemon=True)
        self._thread.start()

    def put(self, fn, *args) -> None:
        self._items.put((fn, args))

    def _run(self) -> None:
        client = client_for(self.uri)
        while (item := self._items.get()) is not None:
            fn, args = item
            for attempt in range(10**9):
                try:
                    fn(client, *args)
                    break
                except Exception as err:  # noqa: BLE001 - retry, unless MLflow said no
                    name = getattr(fn, "__name__", str(fn))
                    if _rejected(err):
                        self.failures.append(f"{name}: {str(err).splitlines()[0][:300]}")
                        logger.warning("MLflow rejected %s: %s", name, err)
                        break
                    if self._give_up.is_set():
                        self._items.put(item)  # counted as undelivered by close()
                        return
                    delay = self.RETRY_BACKOFF_S[min(attempt, len(self.RETRY_BACKOFF_S) - 1)]
                    logger.warning("MLflow unreachable (%s); retrying %s in %d s", str(err).splitlines()[0][:200],
                                   name, delay)
                    self._give_up.wait(delay)

    def close(self, timeout: float) -> list[str]:
        """Wait up to ``timeout`` s for every queued call; returns the names of those not delivered."""
        self._items.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._give_up.set()
            self._thread.join(30)
        left = []
        while not self._items.empty():
            item = self._items.get_nowait()
            if item is not None:
                left.append(getattr(item[0], "__name__", str(item[0])))
        return left


def _rejected(err: Exception) -> bool:
    """MLflow answered, and said no (a bad request): retrying will not help."""
    from mlflow.exceptions import MlflowException, RestException

    if isinstance(err, RestException):
        return err.get_http_status_code() < 500
    if isinstance(err, MlflowException):
        text = str(err)
        return "INVALID_PARAMETER_VALUE" in text or "RESOURCE_ALREADY_EXISTS" in text or \
            "Changing param values is not allowed" in text
    return False


# -- the Tune callback -----------------------------------------------------------------------------------
class SweepLogger(Callback):
    """Driver-side logging of every trial to its own child run under the sweep's parent run.

    Tune pickles its callbacks with the experiment, and a restored sweep runs the pickled logger,
    not a new one: this object therefore holds plain data only, starts its thread in ``setup``,
    and registers itself so the driver can find the logger Tune actually ran (``live``)."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, steps: int,
                 searched: tuple[str, ...], tags: dict[str, str], log_hparams: bool,
                 real_points=None, stage: str = "search", confirms: dict[str, str] | None = None):
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self.steps, self.searched, self.tags, self.log_hparams = steps, tuple(searched), dict(tags), log_hparams
        self.real_points, self.stage = real_points, stage
        self.confirms = dict(confirms or {})  # confirmation stage: config identity -> search trial it confirms
        self._init_runtime()

    def _init_runtime(self) -> None:
        self.queue: TrackingQueue | None = None
        self.runs: dict[str, str] = {}  # trial id -> run id (worker thread)
        self.last_step: dict[str, int] = {}  # trial id -> last step logged (worker thread)
        self.replayed: dict[str, int] = {}  # trial id -> results trained again after a restart (worker thread)
        self.configs: dict[str, dict[str, Any]] = {}  # trial id -> config last logged (PBT)
        self.trial_states: dict[str, str] = {}  # trial id -> Tune status at the end of the run
        self.verdicts: dict[str, tuple[str, str]] = {}  # trial id -> (status, reason), saved with Tune's state
        self.started: set[str] = set()  # trials that ran in this driver session
        self.ended: set[str] = set()  # trials that completed or errored in this driver session
        self.cohort_tags: dict[str, dict[str, str]] = {}  # member id -> its cohort's tags (cohort trials)
        self.restored = False  # Tune restored this logger's state: a resumed sweep (backfilled at its end)

    def __getstate__(self) -> dict[str, Any]:
        keep = ("tracking_uri", "experiment_id", "parent_run_id", "steps", "searched", "tags", "log_hparams",
                "real_points", "stage", "confirms")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    @property
    def key(self) -> str:
        return self.parent_run_id if self.stage == "search" else f"{self.parent_run_id}/{self.stage}"

    @property
    def tune_run(self) -> str:
        """What the Tune run this logger follows is, in words (for errors)."""
        return f"the {self.stage} stage of the sweep's Tune run"

    @staticmethod
    def live(key: str) -> SweepLogger | None:
        """The logger Tune ran for this parent run (``<parent>/confirm`` for the confirmation stage)."""
        return _LIVE.get(key)

    # -- Tune's hooks (driver thread: only queue work here) --------------------------------------
    def setup(self, **info) -> None:
        check_restored(self.key, self.tune_run)  # on --resume: Tune's restore did not fail
        if self.queue is None:
            self.queue = TrackingQueue(self.tracking_uri)
        _LIVE[self.key] = self

    def get_state(self) -> dict[str, Any]:
        """Saved by Tune with every experiment checkpoint: a resumed sweep knows which trials ended."""
        return {"verdicts": dict(self.verdicts)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.verdicts.update({k: tuple(v) for k, v in state.get("verdicts", {}).items()})
        self.restored = True

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started.add(trial.trial_id)
        if MEMBERS_KEY in trial.config:
            for mid, config in self._member_configs(trial):
                if self.verdicts.get(mid, ("interrupted",))[0] != "interrupted":
                    continue  # ended before the restart: its run stays as it ended
                self.verdicts.pop(mid, None)
                self.queue.put(self._ensure_run, mid, config)
            return
        self.queue.put(self._ensure_run, trial.trial_id, dict(trial.config))

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if MEMBERS_KEY in trial.config:
            self._member_results(trial, result)
            return
        # The config this result was trained under: a PBT exploit replaces trial.config in the
        # scheduler's hook, before callbacks see the result that triggered it.
        config = dict(result.get("config") or trial.config)
        metrics = self._metrics(result, config)
        if self.log_hparams:
            if self.configs.get(trial.trial_id, config) != config:
                self.queue.put(self._log_config_change, trial.trial_id, config, int(result.get("step", 0)))
            self.configs[trial.trial_id] = config
        self.queue.put(self._log_result, trial.trial_id, config, metrics, int(result.get("step", 0)))

    def _metrics(self, result: dict[str, Any], config: dict[str, Any] | None) -> dict[str, float]:
        """What a result logs: its numbers, the primary metric first, and under PBT the searched
        hyperparameters it was trained with (``hp_*``)."""
        metrics = numeric_metrics(result, first=self.tags.get("primary_metric"))
        if self.log_hparams and config:
            metrics.update({f"hp_{k}": v for k, v in numeric_metrics(_public(config)).items() if k in self.searched})
        return metrics

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._finish(trial, errored=False)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._finish(trial, errored=True)

    def on_experiment_end(self, trials, **info) -> None:
        """Close every trial's run. A trial Tune never completed nor errored in this session was
        interrupted (after Ctrl-C Tune stops it as TERMINATED without telling its callbacks). A
        trial that ended in an earlier driver session keeps its verdict, and its run is closed
        now if that driver was killed before its tracking thread got to it."""
        for trial in trials:
            self.trial_states[trial.trial_id] = trial.status
            if trial.trial_id in self.ended:
                continue  # _finish queued its end
            errored = trial.status == "ERROR"
            if MEMBERS_KEY in trial.config:
                self._cohort_at_end(trial, errored)
                continue
            if trial.status in ("TERMINATED", "ERROR") and trial.trial_id not in self.started:
                verdict = self.verdicts.get(trial.trial_id) or trial_status(trial.last_result, self.steps, errored)
                self.verdicts[trial.trial_id] = verdict
                self.queue.put(self._close_if_open, trial.trial_id, dict(trial.config), *verdict, trial.checkpoint,
                               "FAILED" if errored else "FINISHED")
                continue
            status, reason = trial_status(trial.last_result, self.steps, False, finished=False)
            self.verdicts[trial.trial_id] = (status, reason)
            self.queue.put(self._end_run, trial.trial_id, dict(trial.config), status, reason, None, "KILLED")
        if self.restored:  # what a killed driver's tracking thread never delivered is in Tune's results
            for trial in trials:
                self.queue.put(self._backfill, trial)

    def _backfill(self, client, trial) -> None:
        """The results in Tune's ``result.json`` of ``trial`` at steps its run (each member's run,
        for a cohort) lacks: a driver killed with results still queued for MLflow lost them, and
        the trial, continued from its last checkpoint, does not report them again."""
        import pyarrow as pa

        try:
            with trial.storage.storage_filesystem.open_input_stream(f"{trial.path}/result.json") as stream:
                lines = stream.readall().decode().splitlines()
        except (OSError, AttributeError, pa.ArrowException):
            return  # no results saved (the trial never reported)
        results = []
        for line in lines:
            try:
                results.append(json.loads(line))
            except ValueError:
                continue  # the last line, cut short by the kill
        cohort = MEMBERS_KEY in trial.config
        members = self._member_configs(trial) if cohort else [(trial.trial_id, None)]
        for k, (run_key, _) in enumerate(members):
            run_id = self.runs.get(run_key) or find_trial_run(client, self.experiment_id, self.parent_run_id, run_key)
            if run_id is None:
                continue
            logged = {int(m.step) for m in client.get_metric_history(run_id, "step")}
            for result in results:
                own = (result.get("members") or {}).get(str(k)) if cohort else result
                if not own or "step" not in own or int(own["step"]) in logged:
                    continue  # a member's last metrics repeat once it ended; a step trained again repeats
                step = int(own["step"])
                log_metrics(client, run_id, self._metrics(own, None if cohort else result.get("config")), step)
                logged.add(step)

    # -- cohort trials: one run per member, ended when the member ends ----------------------------
    def _member_configs(self, trial) -> list[tuple[str, dict[str, Any]]]:
        """A cohort trial's members: (member id, config: the trial's run settings and its params)."""
        base = cohort_base(trial.config)
        out = []
        for k, member in enumerate(trial.config[MEMBERS_KEY]):
            mid = member_id(trial.trial_id, k)
            self.cohort_tags[mid] = {"cohort": trial.trial_id, "cohort_member": str(k),
                                     "cohort_size": str(len(trial.config[MEMBERS_KEY]))}
            out.append((mid, {**base, **member}))
        return out

    def _member_results(self, trial, result: dict[str, Any]) -> None:
        configs = dict(self._member_configs(trial))
        primary = self.tags.get("primary_metric")
        for k, metrics in sorted(members_of(result).items()):
            mid = member_id(trial.trial_id, k)
            if mid in self.verdicts:
                continue  # ended: its last metrics repeat in every result of its cohort
            self.queue.put(self._log_result, mid, configs[mid], numeric_metrics(metrics, first=primary),
                           int(metrics.get("step", 0)))
            if metrics.get("ended"):
                self.verdicts[mid] = trial_status(metrics, self.steps, False)
                self.queue.put(self._end_run, mid, configs[mid], *self.verdicts[mid], None,
                               "FAILED" if self.verdicts[mid][0] == MEMBER_ERROR else "FINISHED")

    def _finish_cohort(self, trial, errored: bool, interrupted: bool = False) -> None:
        """The cohort ended: its members still training end with it (completed, errored or
        interrupted), and every member's artifacts come from the cohort's last checkpoint."""
        last = members_of(trial.last_result)
        error = f": {_error_text(trial)}" if errored else ""
        configs = self._member_configs(trial)
        if trial.checkpoint is not None and not interrupted:  # before the live members' runs end, as a trial's
            self.queue.put(self._member_artifacts, configs, trial.checkpoint)
        for k, (mid, config) in enumerate(configs):
            if mid in self.verdicts:
                continue  # ended before (or interrupted in an earlier session and not restarted since)
            status, reason = trial_status(last.get(k), self.steps, errored, finished=not interrupted)
            self.verdicts[mid] = (status, reason + error if errored else reason)
            end = "FAILED" if errored else "KILLED" if interrupted else "FINISHED"
            self.queue.put(self._end_run, mid, config, *self.verdicts[mid], None, end)

    def _member_artifacts(self, client, configs: list[tuple[str, dict[str, Any]]], checkpoint,
                          missing_only: bool = False) -> None:
        """Every member's artifacts from its cohort's last checkpoint (``missing_only``: to the
        runs without them, those a killed driver ended before it got to them)."""
        from .cohort import member_checkpoint
        from .tune import COHORT_KEYS, load_tune_checkpoint

        # the members' runs are looked up, not _ensure_run'd: that would mark them running again
        run_ids = [self.runs.get(mid) or find_trial_run(client, self.experiment_id, self.parent_run_id, mid)
                   for mid, _ in configs]
        if missing_only:
            run_ids = [r if r and not client.list_artifacts(r, "checkpoint") else None for r in run_ids]
            if not any(run_ids):
                return
        try:
            state = load_tune_checkpoint(checkpoint, COHORT_KEYS)
        except Exception as err:  # noqa: BLE001 - an unreadable checkpoint must not end the sweep
            for run_id in filter(None, run_ids):
                client.set_tag(run_id, "checkpoint_error", str(err)[:500])
            return
        for k, ((_, config), run_id) in enumerate(zip(configs, run_ids, strict=True)):
            if run_id is not None:
                for path, data in self._artifacts_of(config, member_checkpoint(state, k)).items():
                    log_bytes(client, run_id, data, path)

    def _finish(self, trial, errored: bool) -> None:
        self.ended.add(trial.trial_id)
        if MEMBERS_KEY in trial.config:
            self._finish_cohort(trial, errored)
            return
        status, reason = trial_status(trial.last_result, self.steps, errored)
        if errored:
            reason += f": {_error_text(trial)}"
        self.verdicts[trial.trial_id] = (status, reason)
        self.queue.put(self._end_run, trial.trial_id, dict(trial.config), status, reason, trial.checkpoint,
                       "FAILED" if errored else "FINISHED")

    def close(self, timeout: float = 120) -> list[str]:
        """Deliver what is queued (waiting up to ``timeout`` s); returns what was not."""
        if self.queue is None:
            return []
        left = self.queue.close(timeout) + self.queue.failures
        self.queue = None
        return left

    # -- the MLflow calls (tracking thread) -------------------------------------------------------
    def _ensure_run(self, client, trial_id: str, config: dict[str, Any]) -> str:
        if trial_id in self.runs:
            return self.runs[trial_id]
        run_id = find_trial_run(client, self.experiment_id, self.parent_run_id, trial_id)
        if run_id is None:
            public = _public(config)
            name = run_name(public, self.searched)
            tags = {PARENT_TAG: self.parent_run_id, TRIAL_ID_TAG: trial_id, "ganlib_role": "trial",
                    "stage": self.stage, "status": "running", "family": family(public), **source_tags(),
                    **self.tags, **self.cohort_tags.get(trial_id, {})}
            if self.stage == "confirm":
                from .confirm import identity

                tags["confirms"] = self.confirms.get(identity(public), "")
                name = f"confirm {name} seed={public.get('seed')}"
            run = client.create_run(self.experiment_id, run_name=name, tags=tags)
            run_id = run.info.run_id
            log_params(client, run_id, resolved_params(public))
            self.last_step[trial_id] = 0
        else:  # a restarted trial, or a resumed sweep: continue the run, never log a step twice
            if not client.get_run(run_id).data.params:  # created, then an outage or a kill before its params
                log_params(client, run_id, resolved_params(_public(config)))
            history = client.get_metric_history(run_id, "step")
            self.last_step[trial_id] = int(max((m.step for m in history), default=0))
            client.set_tag(run_id, "status", "running")
        self.runs[trial_id] = run_id
        return run_id

    def _log_result(self, client, trial_id: str, config: dict[str, Any], metrics: dict[str, float], step: int) -> None:
        run_id = self._ensure_run(client, trial_id, config)
        if step <= self.last_step.get(trial_id, 0):  # replayed after a restart from an older checkpoint
            self.replayed[trial_id] = self.replayed.get(trial_id, 0) + 1
            return
        log_metrics(client, run_id, metrics, step)
        self.last_step[trial_id] = step

    def _log_config_change(self, client, trial_id: str, config: dict[str, Any], step: int) -> None:
        run_id = self._ensure_run(client, trial_id, config)
        log_bytes(client, run_id, json.dumps(_public(config), indent=1, default=str).encode(),
                  f"config/step_{step:07d}.json")
        client.set_tag(run_id, "config_changed_at", str(step))

    def _end_run(self, client, trial_id: str, config: dict[str, Any], status: str, reason: str, checkpoint,
                 end: str) -> None:
        run_id = self._ensure_run(client, trial_id, config)
        client.set_tag(run_id, "status", status)
        client.set_tag(run_id, "reason", reason[:5000])
        if self.replayed.get(trial_id):
            client.set_tag(run_id, "replayed_results", str(self.replayed[trial_id]))
        if checkpoint is not None:
            from .tune import load_tune_checkpoint

            try:
                artifacts = self._artifacts_of(config, load_tune_checkpoint(checkpoint))
            except Exception as err:  # noqa: BLE001 - an unreadable checkpoint must not end the sweep
                client.set_tag(run_id, "checkpoint_error", str(err)[:500])
                artifacts = {}
            for path, data in artifacts.items():
                log_bytes(client, run_id, data, path)
        client.set_terminated(run_id, end)

    def _cohort_at_end(self, trial, errored: bool) -> None:
        """on_experiment_end for a cohort: ended in an earlier driver session (close what that
        driver left open), or interrupted now."""
        if trial.status in ("TERMINATED", "ERROR") and trial.trial_id not in self.started:
            last, configs = members_of(trial.last_result), self._member_configs(trial)
            for k, (mid, config) in enumerate(configs):
                verdict = self.verdicts.get(mid) or trial_status(last.get(k), self.steps, errored)
                self.verdicts[mid] = verdict
                self.queue.put(self._close_if_open, mid, config, *verdict, None, "FAILED" if errored else "FINISHED")
            if trial.checkpoint is not None:  # that driver may have been killed before the artifacts
                self.queue.put(self._member_artifacts, configs, trial.checkpoint, True)
            return
        self._finish_cohort(trial, False, interrupted=True)

    def _close_if_open(self, client, trial_id: str, config: dict[str, Any], status: str, reason: str, checkpoint,
                       end: str) -> None:
        # Looked up without _ensure_run, which marks a continued run as running again.
        run_id = self.runs.get(trial_id) or find_trial_run(client, self.experiment_id, self.parent_run_id, trial_id)
        if run_id is None or client.get_run(run_id).info.status == "RUNNING":
            self._end_run(client, trial_id, config, status, reason, checkpoint, end)

    def _artifacts_of(self, config: dict[str, Any], state: dict[str, Any]) -> dict[str, bytes]:
        """From the trial's last checkpoint (a member's, for a cohort): the final generator weights,
        the best-score ones (with their step), and a picture of the last samples."""
        import torch

        from .figures import sample_figure

        best = (state.get("evaluation") or {}).get("best") or {}
        header = {"config": state["config"], "format": state.get("format")}
        out = {}
        for name, weights, step in (("last", state["generator"], state["step"]),
                                    ("best", best.get("generator"), best.get("step"))):
            if weights is not None:
                buffer = io.BytesIO()
                torch.save({**header, "generator": weights, "step": step}, buffer)
                out[f"checkpoint/generator_{name}.pt"] = buffer.getvalue()
        if state.get("samples") is not None:
            real = None if self.real_points is None else torch.as_tensor(self.real_points)
            out["samples/last.png"] = sample_figure(state["samples"], real,
                                                    f"{family(_public(config))} step {state['step']}")
        return out


def _error_text(trial) -> str:
    """The last line of the trial's error (the exception and its message), as Tune saved it."""
    try:
        lines = [line.strip() for line in Path(trial.error_file).read_text().splitlines() if line.strip()]
        return lines[-1][:500] if lines else "unknown error"
    except (OSError, TypeError):
        return "unknown error (no error file)"


def _public(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def resolved_params(config: dict[str, Any]) -> dict[str, Any]:
    """The trial's config as it runs: shorthands expanded, the papers' defaults filled in."""
    try:
        return GanConfig.from_dict(config).to_dict()
    except ValueError:
        return config


# -- the parent run ---------------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "ray", "optuna", "mlflow", "pot", "torchmetrics", "ganlib"):
        try:
            out[f"version.{name}"] = version(name)
        except PackageNotFoundError:
            pass
    return out


def source_tags() -> dict[str, str]:
    """MLflow's own source columns (Source, Version) for sweep runs."""
    return {"mlflow.source.type": "JOB", "mlflow.source.name": "ganlib.sweep",
            "mlflow.source.git.commit": code_version()}


@functools.cache
def code_version() -> str:
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=5,
                               cwd=Path(__file__).parent).stdout.strip()
        return head + ("+dirty" if dirty and head else "") if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def find_sweep_run(client, experiment_id: str, name: str):
    runs = client.search_runs([experiment_id], filter_string=(
        f"tags.ganlib_role = 'sweep' and tags.sweep_name = '{name}'"), max_results=1,
        order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def start_sweep_run(client, experiment_id: str, settings, space, plan_text: str) -> str:
    """A new parent run for the sweep: its settings as params, the space as an artifact."""
    import yaml

    run = client.create_run(experiment_id, run_name=settings.name, tags={
        "ganlib_role": "sweep", "sweep_name": settings.name, "sweep_base": settings.base_name,
        "sweep_state": "running", "space": space.name,
        "dataset": settings.dataset,
        "searcher": "pbt-population" if settings.scheduler == "pbt" else f"optuna-{settings.searcher}",
        "scheduler": settings.scheduler, "schedule": plan_text[:5000], "code_version": code_version(),
        "status": "running", **source_tags(), **_versions()})
    run_id = run.info.run_id
    log_params(client, run_id, {**settings.to_dict(), "searched": ",".join(space.fields)})
    log_bytes(client, run_id, yaml.safe_dump(space.to_dict(), sort_keys=False).encode(), "space.yaml")
    return run_id
