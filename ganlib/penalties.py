"""Lipschitz constraints on the critic: the WGAN-GP gradient penalty and WGAN weight clipping."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor,
                     generator: torch.Generator | None = None) -> Tensor:
    """Batch mean of (||grad_x critic(x_hat)||_2 - 1)^2, x_hat = eps*real + (1-eps)*fake.

    eps ~ U[0, 1] is drawn PER SAMPLE and the norm is taken PER SAMPLE (Gulrajani et al.
    2017, Algorithm 1, lines 4-7); a single eps or a batch-wide norm is a different penalty.
    The graph is kept (create_graph) so the penalty trains the critic.
    """
    fake = fake.detach()
    eps_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(eps_shape, generator=generator, device=real.device, dtype=real.dtype)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    # Summing outputs is exact here: sample i's output depends only on x_hat[i] (no batch norm).
    norms = grad.flatten(1).norm(2, dim=1)
    return ((norms - 1.0) ** 2).mean()


@torch.no_grad()
def clip_weights_(critic: nn.Module, c: float) -> None:
    """Clamp every critic parameter to [-c, c] in place (Arjovsky et al. 2017, Alg. 1 line 8)."""
    for p in critic.parameters():
        p.clamp_(-c, c)
