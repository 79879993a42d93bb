"""The Tune-reportable training function (a function trainable, as in the Ray Tune examples).

Ray 2.60 wants ``ray.tune.report(metrics, checkpoint=tune.Checkpoint)`` and
``ray.tune.get_checkpoint()`` inside Tune functions; ``ray.train.report`` raises there.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import GanConfig
from .train import train

CHECKPOINT_FILE = "checkpoint.pt"


def _tune_reporter(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
    from ray import tune

    if state is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        torch.save(state, Path(folder) / CHECKPOINT_FILE)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def load_tune_checkpoint(checkpoint: Any) -> dict[str, Any]:
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)


def train_gan(config: dict[str, Any]) -> None:
    """Build everything from ``config`` (so sampled values apply from step 0), resume from
    Tune's checkpoint when there is one, train, report every ``eval_every`` steps.

    A checkpoint handed over by Tune is either this trial's own (after a failure or a pause)
    or, under population-based training, a donor's: hyperparameters may then differ, and
    this trial's own values are applied to the restored optimizers.

    With a ``_tracking`` entry ({uri, experiment_id, parent_run_id, plot_every}) the trial logs
    its own MLflow child run under the sweep's parent run."""
    from ray import tune

    observers = []
    tracking = config.get("_tracking")
    if tracking:
        from .tracking import TrialTracker

        context = tune.get_context()
        params = GanConfig.from_dict(config).to_dict()
        observers.append(TrialTracker(tracking, context.get_trial_id(), context.get_trial_name(), params,
                                      plot_every=tracking.get("plot_every", 1)))
    checkpoint = tune.get_checkpoint()
    resume = load_tune_checkpoint(checkpoint) if checkpoint is not None else None
    train(config, _tune_reporter, resume=resume, allow_hparam_change=True, observers=observers)
