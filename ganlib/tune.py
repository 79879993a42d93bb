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
from .trainer import CheckpointError, load_checkpoint

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


def load_tune_checkpoint(checkpoint: Any) -> dict[str, Any]:
    """The state in a Tune checkpoint; ``CheckpointError`` naming the checkpoint if it is damaged."""
    try:
        with checkpoint.as_directory() as folder:
            return load_checkpoint(Path(folder) / CHECKPOINT_FILE)
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


def restore_state(checkpoint: Any) -> dict[str, Any] | None:
    """The newest readable checkpoint of the trial: a truncated or damaged one is skipped (with
    a warning naming it) for the one before; None if none is readable (the trial starts over)."""
    for candidate in [checkpoint, *older_checkpoints(checkpoint)]:
        try:
            return load_tune_checkpoint(candidate)
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


def trainable(data: Dataset | None, cpus: float, gpus: float):
    """The function Tune runs for each trial, with its resources and the shared dataset."""
    from ray import tune

    return tune.with_resources(tune.with_parameters(train_gan, data=data), {"cpu": cpus, "gpu": gpus})
