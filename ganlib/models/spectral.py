"""Spectral normalisation of a critic (Miyato et al. 2018): every linear and convolutional
weight divided by its largest singular value, estimated by one power iteration per forward
pass in training mode (torch's parametrisation; the u, v vectors are buffers, so they are
part of the state dict and of every checkpoint)."""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def spectral_normalise(module: nn.Module) -> nn.Module:
    """Parametrise every Linear / Conv weight inside ``module`` in place; returns it."""
    for layer in list(module.modules()):
        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            spectral_norm(layer)
    return module
