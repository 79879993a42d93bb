"""Optimizers per network, and applying new hyperparameters to a live optimizer."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .config import GanConfig


def _hparams(cfg: GanConfig, lr: float) -> dict:
    if cfg.optimizer == "adam":
        return dict(lr=lr, betas=(cfg.beta1, cfg.beta2))
    if cfg.optimizer == "sgd":
        return dict(lr=lr, momentum=cfg.momentum)
    return dict(lr=lr)  # rmsprop: torch defaults (alpha 0.99, eps 1e-8), as WGAN's code


def build_optimizer(cfg: GanConfig, params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    cls = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop, "sgd": torch.optim.SGD}[cfg.optimizer]
    return cls(params, **_hparams(cfg, lr))


def apply_hparams(optimizer: torch.optim.Optimizer, cfg: GanConfig, lr: float) -> None:
    """Overwrite lr / betas / momentum in every param group, e.g. after a checkpoint from a
    population-based donor was loaded: its state comes along, this trial's values apply."""
    for group in optimizer.param_groups:
        group.update(_hparams(cfg, lr))
