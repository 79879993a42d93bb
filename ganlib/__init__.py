"""ganlib: GAN, WGAN and WGAN-GP trainers, swept with Ray Tune + Optuna, tracked in MLflow.

What a notebook needs::

    from ganlib import GanConfig, train, load_space, evaluate_checkpoint
    trainer = train(GanConfig.create(loss="wgan_gp", dataset="ring8", steps=500))

Names are imported on first use (PEP 562), so ``import ganlib`` itself loads neither torch nor Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # configuration
    "GanConfig": "config", "ConfigError": "config", "CollapseRules": "config",
    # training
    "Trainer": "trainer", "load_checkpoint": "trainer", "CheckpointError": "trainer", "train": "train",
    "CohortTrainer": "cohort", "train_cohort": "cohort_run",
    # evaluation
    "Evaluator": "evaluate", "evaluate_checkpoint": "evaluate", "primary_metric": "evaluate",
    # search spaces and sweeps
    "load_space": "spaces", "SearchSpace": "spaces", "SpaceError": "spaces",
    "SweepSettings": "settings", "run_sweep": "sweep",
    # data
    "load_dataset": "data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ganlib' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
