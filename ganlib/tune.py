"""The Tune-reportable training function (a function trainable, as in the Ray Tune examples).

Ray 2.60 wants ``ray.tune.report(metrics, checkpoint=tune.Checkpoint)`` and
``ray.tune.get_checkpoint()`` inside Tune functions; ``ray.train.report`` raises there.

``trainable(data, cpus, gpus)`` is what a sweep runs: the trial config holds hyperparameters
and run settings only; the dataset, built once by the driver, reaches every trial through
``tune.with_parameters`` (Ray's object store), not through the config.
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .config import GanConfig
from .data import Dataset
from .train import train
from .trainer import CHECKPOINT_KEYS, CheckpointError, load_checkpoint

CHECKPOINT_FILE = "checkpoint.pt"
logger = logging.getLogger(__name__)


def _tune_reporter(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
    from ray import tune

    if state is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        torch.save(state, Path(folder) / CHECKPOINT_FILE)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


COHORT_KEYS = ("cohort", "evaluation", "latest")  # a cohort trial's checkpoint (cohort_run.cohort_checkpoint)


def load_tune_checkpoint(checkpoint: Any, keys: tuple[str, ...] = CHECKPOINT_KEYS) -> dict[str, Any]:
    """The state in a Tune checkpoint (a solo run's, or with ``keys=COHORT_KEYS`` a cohort's);
    ``CheckpointError`` naming the checkpoint if it is damaged."""
    try:
        with checkpoint.as_directory() as folder:
            return load_checkpoint(Path(folder) / CHECKPOINT_FILE, keys)
    except CheckpointError as err:
        raise CheckpointError(f"{checkpoint.path}: {err}") from None
    except OSError as err:
        raise CheckpointError(f"checkpoint {checkpoint.path!r} cannot be read: {err}") from None


def older_checkpoints(checkpoint: Any) -> list[Any]:
    """The trial's other checkpoints beside ``checkpoint`` (Tune keeps ``num_to_keep``), newest first."""
    import pyarrow.fs as pafs
    from ray import tune

    parent = checkpoint.path.rstrip("/").rsplit("/", 1)[0]
    try:
        entries = checkpoint.filesystem.get_file_info(pafs.FileSelector(parent))
    except OSError:
        return []
    paths = sorted((e.path for e in entries if e.type == pafs.FileType.Directory
                    and e.base_name.startswith("checkpoint_") and e.path.rstrip("/") != checkpoint.path.rstrip("/")),
                   reverse=True)
    return [tune.Checkpoint(p, filesystem=checkpoint.filesystem) for p in paths]


def restore_state(checkpoint: Any, keys: tuple[str, ...] = CHECKPOINT_KEYS) -> dict[str, Any] | None:
    """The newest readable checkpoint of the trial: a truncated or damaged one is skipped (with
    a warning naming it) for the one before; None if none is readable (the trial starts over)."""
    for candidate in [checkpoint, *older_checkpoints(checkpoint)]:
        try:
            return load_tune_checkpoint(candidate, keys)
        except CheckpointError as err:
            logger.warning("%s; trying the trial's previous checkpoint", err)
    logger.warning("no readable checkpoint for this trial: it starts from step 0")
    return None


# Tune's experiment state files, one of each kind per driver session (restored: each kind's newest by name)
TUNE_STATE_FILES = ("experiment_state-*.json", "callback-states-*.pkl", "searcher-state-*.pkl",
                    "search_gen_state-*.json", "basic-variant-state-*.json")


def set_aside_unreadable_state(experiment_path: str) -> list[str]:
    """Before a restore: each kind of Tune state file whose newest copies cannot be read is
    renamed aside (``<name>.unreadable``), so Tune restores from the newest readable one.

    A driver SIGKILLed while Tune copies its state from the driver's staging folder into the
    storage path leaves truncated files there (seen: a 0-byte ``callback-states-*.pkl``), and
    Tune restores each kind's newest file by name, unchecked: ``TuneController.resume`` meets an
    EOFError, logs it, and the restored run has no trials at all. Returns the names set aside."""
    import fnmatch

    import pyarrow.fs as pafs
    from ray import cloudpickle
    from ray.train._internal.storage import get_fs_and_path
    from ray.tune.utils.serialization import _loads_with_cloudpickle

    fs, root = get_fs_and_path(experiment_path)
    try:
        names = [i.base_name for i in fs.get_file_info(pafs.FileSelector(root)) if i.type == pafs.FileType.File]
    except OSError:  # no such folder (yet)
        return []
    aside = []
    for pattern in TUNE_STATE_FILES:
        load = _loads_with_cloudpickle if pattern.startswith("experiment_state") else cloudpickle.loads
        for name in sorted(fnmatch.filter(names, pattern), reverse=True):
            path = f"{root}/{name}"
            try:
                with fs.open_input_stream(path) as stream:
                    load(stream.readall())
                break  # the newest readable one: Tune restores from it
            except Exception:  # noqa: BLE001 - truncated or damaged: any failure to load it
                fs.move(path, f"{path}.unreadable")
                aside.append(name)
                logger.warning("Tune state file %s cannot be read (a driver killed while writing it?): set aside "
                               "as %s.unreadable; restoring from the one before", path, name)
    return aside


class RestoreFailed(RuntimeError):
    """Tune could not restore a resumed Tune run: no trial of it ran, nothing was saved."""


_RESTORING: dict[str, list[str]] = {}  # key of a Tune run being restored -> errors Tune logged meanwhile


class _TuneErrors(logging.Handler):
    def __init__(self, into: list[str]):
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        self.into.append(f"{type(error).__name__}: {error}" if error else record.getMessage())


@contextmanager
def restoring(key: str, what: str):
    """Around ``Tuner.restore(...).fit()`` of ``what``, the Tune run whose callback calls
    ``check_restored(key, what)`` from its ``setup``: a restore that fails raises
    ``RestoreFailed`` naming Tune's error, before any trial starts or any state is saved.

    Tune 2.60 catches any exception while it restores (``TuneController.__init__``), logs
    "Failed to restore the run state" and goes on as if the run were new. With a searcher
    restored before the failure, ``tune.run`` then trips an ``AssertionError`` (the searcher
    already holds its experiment): that is turned into ``RestoreFailed``. With the basic variant
    generator it runs afresh: no trials if that generator was restored (an empty result, and a
    state file saved over the sweep's), every trial again if not; the callback's ``setup``, which
    Tune calls after restoring and before the first trial or save, stops it."""
    errors = _RESTORING[key] = []
    handler = _TuneErrors(errors)
    tune_logger = logging.getLogger("ray.tune.execution.tune_controller")
    tune_logger.addHandler(handler)
    try:
        yield
    except RestoreFailed:
        raise
    except Exception as err:
        if key in _RESTORING and errors:  # failed before the run was set up, after a failed restore
            raise RestoreFailed(_restore_failure(what, errors)) from err
        raise
    finally:
        tune_logger.removeHandler(handler)
        _RESTORING.pop(key, None)


def _restore_failure(what: str, errors: list[str]) -> str:
    return f"Tune could not restore {what} ({'; '.join(errors)}); no trial ran and nothing was saved"


def check_restored(key: str, what: str) -> None:
    """In the ``setup`` of the callback ``restoring`` names (Tune's restore is over by then):
    ``RestoreFailed`` if Tune logged that the restore failed. A restore that found no state
    for some part (a callback state file set aside as truncated) is not a failure."""
    errors = _RESTORING.pop(key, None)
    if errors:
        raise RestoreFailed(_restore_failure(what, errors))


def trial_device(requested: str) -> str:
    """``auto`` is CUDA only when Ray gave this trial a GPU: a trial asking for none keeps the
    node's CUDA_VISIBLE_DEVICES and would otherwise share a GPU Ray has not accounted for."""
    import ray

    if requested != "auto":
        return requested
    return "cuda" if ray.get_gpu_ids() else "cpu"


def train_gan(config: dict[str, Any], data: Dataset | None = None) -> None:
    """Build everything from ``config`` (so sampled values apply from step 0), resume from
    Tune's checkpoint when there is one, train, report every ``eval_every`` steps.

    A checkpoint handed over by Tune is either this trial's own (after a failure or a pause)
    or, under population-based training, a donor's: hyperparameters may then differ, and
    this trial's own values are applied to the restored optimizers."""
    from ray import tune

    config = {**config, "device": trial_device(config.get("device", "auto"))}
    if data is not None and data.name != config.get("dataset", GanConfig.dataset):
        data = None  # a space that searches the dataset: build the trial's own
    checkpoint = tune.get_checkpoint()
    resume = restore_state(checkpoint) if checkpoint is not None else None
    train(config, _tune_reporter, resume=resume, data=data, allow_hparam_change=True)


def train_cohort_trial(config: dict[str, Any], data: Dataset | None = None) -> None:
    """A cohort trial (``--cohort K``): the config's members (``cohort_search.MEMBERS_KEY``) over
    its run settings, trained together (``cohort_run.train_cohort``). Each result holds every
    member's latest metrics under ``members`` (keyed by place in the cohort) and, for Tune's
    display, the cohort's step and best objective. At a rung step each healthy member gets the
    rungs actor's decision; a member told to stop leaves the stack before the checkpoint."""
    import ray
    from ray import tune

    from .cohort import MEMBERS_KEY, RUNGS_KEY, cohort_base, member_id
    from .cohort_run import train_cohort

    base = cohort_base(config)
    base["device"] = trial_device(base.get("device", "auto"))
    configs = [{**base, **member} for member in config[MEMBERS_KEY]]
    if data is not None and data.name != configs[0].get("dataset", GanConfig.dataset):
        data = None
    trial_id = tune.get_context().get_trial_id()
    rungs = ray.get_actor(config[RUNGS_KEY]) if config.get(RUNGS_KEY) else None
    rung_steps = set(base.get("checkpoint_steps") or ()) if rungs is not None else set()

    def decide(results: dict[int, dict[str, Any]]) -> list[int]:
        step = next(iter(results.values()))["step"]
        if step not in rung_steps:
            return []
        asks = {k: rungs.stop.remote(member_id(trial_id, k), step, m["objective"]) for k, m in results.items()}
        return [k for k, ref in asks.items() if ray.get(ref)]

    def report(latest: dict[int, dict[str, Any]], state: dict[str, Any] | None) -> None:
        live = [m for m in latest.values() if not m["ended"]] or list(latest.values())
        summary = {"step": max(m["step"] for m in latest.values()),
                   "objective": min(m["objective"] for m in latest.values()),
                   "members_active": sum(not m["ended"] for m in latest.values()),
                   "critic_steps": max(m["critic_steps"] for m in live),
                   "members": {str(k): m for k, m in latest.items()}}
        _tune_reporter(summary, state)

    checkpoint = tune.get_checkpoint()
    resume = restore_state(checkpoint, COHORT_KEYS) if checkpoint is not None else None
    train_cohort(configs, report, resume=resume, data=data, decide=decide)


def trainable(data: Dataset | None, cpus: float, gpus: float, cohort: bool = False):
    """The function Tune runs for each trial, with its resources and the shared dataset."""
    from ray import tune

    function = train_cohort_trial if cohort else train_gan
    return tune.with_resources(tune.with_parameters(function, data=data), {"cpu": cpus, "gpu": gpus})
