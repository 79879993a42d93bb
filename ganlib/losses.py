"""Pure adversarial losses, one signature for every family (the loss/penalty split of
compare_gan): ``d_loss(real_out, fake_out)`` is what the discriminator / critic MINIMISES,
``g_loss(fake_out)`` what the generator minimises. Outputs are logits for the GAN family
and raw critic values for the Wasserstein family. Penalties live in ``penalties.py``.

GAN (Goodfellow et al. 2014, Algorithm 1), with D(x) = sigmoid(l):
  D ascends  log D(x) + log(1 - D(G(z)))  ->  d_loss = softplus(-l_real) + softplus(l_fake)
  minimax G descends  log(1 - D(G(z)))    ->  g_loss = -softplus(l_fake)
  non-saturating G ascends  log D(G(z))   ->  g_loss = softplus(-l_fake)
using log sigmoid(l) = -softplus(-l) and log(1 - sigmoid(l)) = -softplus(l), which never
evaluate log(0).
WGAN (Arjovsky et al. 2017): critic ascends E f(x) - E f(G(z)); generator descends -E f(G(z)).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

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


class LossPair(NamedTuple):
    d_loss: Callable[[Tensor, Tensor], Tensor]
    g_loss: Callable[[Tensor], Tensor]


LOSS_PAIRS: dict[str, LossPair] = {
    "gan_minimax": LossPair(gan_d_loss, gan_minimax_g_loss),
    "gan_ns": LossPair(gan_d_loss, gan_ns_g_loss),
    "wgan": LossPair(wasserstein_d_loss, wasserstein_g_loss),
    "wgan_gp": LossPair(wasserstein_d_loss, wasserstein_g_loss),
}
