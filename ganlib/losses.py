"""Pure adversarial losses, one signature for every loss (the loss/penalty split of
compare_gan): ``d_loss(real_out, fake_out)`` is what the discriminator / critic MINIMISES,
``g_loss(fake_out)`` what the generator minimises. The critic constraint (clipping, gradient
penalty) is a separate axis: ``constraints.py``.

GAN (Goodfellow et al. 2014, Algorithm 1), outputs are logits l with D(x) = sigmoid(l):
  D ascends  log D(x) + log(1 - D(G(z)))  ->  d_loss = softplus(-l_real) + softplus(l_fake)
  minimax G descends  log(1 - D(G(z)))    ->  g_loss = -softplus(l_fake)
  non-saturating G ascends  log D(G(z))   ->  g_loss = softplus(-l_fake)
using log sigmoid(l) = -softplus(-l) and log(1 - sigmoid(l)) = -softplus(l), which never
evaluate log(0).
WGAN (Arjovsky et al. 2017): critic ascends E f(x) - E f(G(z)); generator descends -E f(G(z)).
LSGAN (Mao et al. 2017, targets a = 0, b = c = 1): D descends 1/2 E (D(x) - 1)^2 + 1/2 E D(G(z))^2;
G descends 1/2 E (D(G(z)) - 1)^2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def gan_d_loss(real_out: Tensor, fake_out: Tensor) -> Tensor:
    return F.softplus(-real_out).mean() + F.softplus(fake_out).mean()


def gan_minimax_g_loss(fake_out: Tensor) -> Tensor:
    return -F.softplus(fake_out).mean()


def gan_ns_g_loss(fake_out: Tensor) -> Tensor:
    return F.softplus(-fake_out).mean()


def wasserstein_d_loss(real_out: Tensor, fake_out: Tensor) -> Tensor:
    return fake_out.mean() - real_out.mean()


def wasserstein_g_loss(fake_out: Tensor) -> Tensor:
    return -fake_out.mean()


def least_squares_d_loss(real_out: Tensor, fake_out: Tensor) -> Tensor:
    return 0.5 * (real_out - 1).pow(2).mean() + 0.5 * fake_out.pow(2).mean()


def least_squares_g_loss(fake_out: Tensor) -> Tensor:
    return 0.5 * (fake_out - 1).pow(2).mean()


def logit_outputs(real_out: Tensor, fake_out: Tensor) -> dict[str, float]:
    """The discriminator's mean probabilities D(x), D(G(z))."""
    return {"d_real": torch.sigmoid(real_out).mean().item(), "d_fake": torch.sigmoid(fake_out).mean().item()}


def critic_estimate(real_out: Tensor, fake_out: Tensor) -> dict[str, float]:
    """The critic's W1 estimate E f(x) - E f(G(z))."""
    return {"w_critic": (real_out.mean() - fake_out.mean()).item()}


def raw_scores(real_out: Tensor, fake_out: Tensor) -> dict[str, float]:
    """Mean raw outputs (least squares: targets 1 for real, 0 for fake)."""
    return {"d_real": real_out.mean().item(), "d_fake": fake_out.mean().item()}


@dataclass(frozen=True)
class Loss:
    """One adversarial loss: the two objectives, and how to read the critic's outputs at an
    evaluation (``describe(real_out, fake_out)``, on held-out data)."""

    name: str
    d_loss: Callable[[Tensor, Tensor], Tensor]
    g_loss: Callable[[Tensor], Tensor]
    describe: Callable[[Tensor, Tensor], dict[str, float]]
    # the generator's gradient vanishes when D wins outright (the minimax loss only: GAN paper, 3)
    saturates: bool = False


LOSSES: dict[str, Loss] = {
    "minimax": Loss("minimax", gan_d_loss, gan_minimax_g_loss, logit_outputs, saturates=True),
    "non_saturating": Loss("non_saturating", gan_d_loss, gan_ns_g_loss, logit_outputs),
    "wasserstein": Loss("wasserstein", wasserstein_d_loss, wasserstein_g_loss, critic_estimate),
    "least_squares": Loss("least_squares", least_squares_d_loss, least_squares_g_loss, raw_scores),
}
