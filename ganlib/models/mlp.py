"""MLP generator and discriminator / critic for vector data (the WGAN-GP toy networks)."""

from __future__ import annotations

import math

from torch import Tensor, nn

from .spectral import spectral_normalise

_NORMS = {"none": None, "spectral": None, "layer": nn.LayerNorm, "batch": nn.BatchNorm1d}


def _mlp(n_in: int, n_out: int, width: int, depth: int, norm: str) -> nn.Sequential:
    """depth hidden layers of ``width`` ReLU units, then a linear output layer. ``spectral``
    normalises every linear layer (Miyato et al. 2018) instead of adding a norm layer."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Linear(n_in if i == 0 else width, width))
        if _NORMS[norm] is not None:
            layers.append(_NORMS[norm](width))
        layers.append(nn.ReLU())
    layers.append(nn.Linear(width if depth else n_in, n_out))
    net = nn.Sequential(*layers)
    return spectral_normalise(net) if norm == "spectral" else net


class MLPGenerator(nn.Module):
    def __init__(self, z_dim: int, out_shape: tuple[int, ...], width: int, depth: int, norm: str = "none"):
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.net = _mlp(z_dim, math.prod(self.out_shape), width, depth, norm)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, *self.out_shape)


class MLPCritic(nn.Module):
    """Ends in a linear layer: raw critic values for WGAN, logits for GAN."""

    def __init__(self, in_dim: int, width: int, depth: int, norm: str = "none"):
        super().__init__()
        self.net = _mlp(in_dim, 1, width, depth, norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1)).squeeze(1)
