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


def trial_device(requested: str) -> str:
    """``auto`` is CUDA only when Ray gave this trial a GPU: a trial asking for none keeps the
    node's CUDA_VISIBLE_DEVICES and would otherwise share a GPU Ray has not accounted for."""
    import ray

    if requested != "auto":
        return requested
    return "cuda" if ray.get_gpu_ids() else "cpu"


def train_gan(config: dict[str, Any], data: Dataset | None = None, extractor=None) -> None:
    """Build everything from ``config`` (so sampled values apply from step 0), resume from
    Tune's checkpoint when there is one, train, report every ``eval_every`` steps.

    A checkpoint handed over by Tune is either this trial's own (after a failure or a pause)
    or, under population-based training, a donor's: hyperparameters may then differ, and
    this trial's own values are applied to the restored optimizers."""
    from ray import tune

    config = {**config, "device": trial_device(config.get("device", "auto"))}
    if data is not None and data.name != config.get("dataset", GanConfig.dataset):
        data = None  # a space that searches the dataset: build the trial's own
    _use_shipped(data, config, extractor)
    checkpoint = tune.get_checkpoint()
    resume = restore_state(checkpoint) if checkpoint is not None else None
    train(config, _tune_reporter, resume=resume, data=data, allow_hparam_change=True)


def train_cohort_trial(config: dict[str, Any], data: Dataset | None = None, extractor=None) -> None:
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
    _use_shipped(data, base, extractor)
    trial_id = tune.get_context().get_trial_id()
    rungs = ray.get_actor(config[RUNGS_KEY]) if config.get(RUNGS_KEY) else None
    rung_steps = set(base.get("checkpoint_steps") or ()) if rungs is not None else set()

    def decide(results: dict[int, dict[str, Any]], ending: set[int]) -> list[int]:
        step = next(iter(results.values()))["step"]
        if step not in rung_steps:
            return []
        asks = {k: rungs.stop.remote(member_id(trial_id, k), step, m["objective"], k in ending)
                for k, m in results.items()}
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


def trainable(data: Dataset | None, cpus: float, gpus: float, cohort: bool = False, extractor=None):
    """The function Tune runs for each trial, with its resources, the shared dataset and the FID
    feature extractor the driver's pre-flight loaded (so every node scores in the feature space
    the sweep's tag names, and a node without the extractor's file can score at all)."""
    from ray import tune

    function = train_cohort_trial if cohort else train_gan
    return tune.with_resources(tune.with_parameters(function, data=data, extractor=extractor),
                               {"cpu": cpus, "gpu": gpus})


def _use_shipped(data: Dataset | None, config: dict[str, Any], extractor) -> None:
    if data is not None and extractor is not None:
        from .evaluate import use_extractor

        use_extractor(data, config.get("inception_weights"), extractor)
