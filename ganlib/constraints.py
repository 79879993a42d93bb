"""The critic constraint, one axis of the configuration: what adds to the critic loss and what
runs after each critic update. The trainer calls these three hooks and knows nothing else:

* ``start(critic)``: once, before the first step (clipping puts the critic in the box);
* ``penalty(critic, real, fake, rng)``: the raw penalty term (a 0-d tensor) or None; the
  critic minimises ``loss + weight * penalty``;
* ``after_step(critic)``: after every critic update (clipping clamps the weights again).

The penalty and the clamp themselves are pure functions in ``penalties.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .config import GanConfig
from .penalties import clip_weights_, gradient_penalty


@dataclass(frozen=True)
class NoConstraint:
    name = "none"
    weight: float = 0.0

    def start(self, critic: nn.Module) -> None:
        pass

    def penalty(self, critic: nn.Module, real: Tensor, fake: Tensor, rng: torch.Generator) -> Tensor | None:
        return None

    def after_step(self, critic: nn.Module) -> None:
        pass


@dataclass(frozen=True)
class WeightClipping(NoConstraint):
    """WGAN (Arjovsky et al. 2017, Algorithm 1 line 8): every critic parameter in [-c, c]; the
    critic lives in that compact set from initialisation on."""

    name = "clip"
    c: float = 0.01

    def start(self, critic: nn.Module) -> None:
        clip_weights_(critic, self.c)

    def after_step(self, critic: nn.Module) -> None:
        clip_weights_(critic, self.c)


@dataclass(frozen=True)
class GradientPenalty(NoConstraint):
    """WGAN-GP (Gulrajani et al. 2017, Algorithm 1 lines 4-7): lambda * E (||grad f(x_hat)|| - 1)^2,
    eps drawn per sample from the run's noise stream."""

    name = "gp"

    def penalty(self, critic: nn.Module, real: Tensor, fake: Tensor, rng: torch.Generator) -> Tensor:
        return gradient_penalty(critic, real, fake, generator=rng)


def build_constraint(cfg: GanConfig) -> NoConstraint:
    if cfg.constraint == "clip":
        return WeightClipping(c=cfg.clip)
    if cfg.constraint == "gp":
        return GradientPenalty(weight=cfg.gp_lambda)
    return NoConstraint()
