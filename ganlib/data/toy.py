"""Embedded 2-D toy distributions, as in the WGAN-GP toy experiments (gan_toy.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import HELDOUT_SEED  # one fixed held-out draw for every trial: scores compare
from .base import Dataset

HELDOUT_SIZE = 4096


@dataclass(eq=False)
class MixtureDataset(Dataset):
    """An isotropic Gaussian mixture with equal weights; an infinite stream."""

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        which = torch.randint(len(self.centers), (n,), generator=generator)
        noise = torch.randn(n, self.centers.shape[1], generator=generator)
        return self.centers[which] + self.std * noise


@dataclass(eq=False)
class SwissRollDataset(Dataset):
    """sklearn's make_swiss_roll(noise=0.25) projected on (x, z) and scaled by 1/7.5."""

    noise: float = 0.25

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator))
        points = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1)
        return (points + self.noise * torch.randn(n, 2, generator=generator)) / 7.5


def ring8_centers(radius: float = 2.0) -> Tensor:
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return (radius * torch.stack([torch.cos(angles), torch.sin(angles)], 1)).float()


def grid25_centers() -> Tensor:
    coords = torch.arange(-4.0, 4.0 + 1e-9, 2.0)
    return torch.cartesian_prod(coords, coords)


def _with_heldout(dataset: Dataset) -> Dataset:
    dataset.heldout = dataset.sample(HELDOUT_SIZE, torch.Generator().manual_seed(HELDOUT_SEED))
    return dataset


def ring8() -> MixtureDataset:
    """8 Gaussians on a circle of radius 2, std 0.02."""
    return _with_heldout(MixtureDataset("ring8", "vector", (2,), torch.empty(0), ring8_centers(), 0.02))


def grid25() -> MixtureDataset:
    """25 Gaussians on the grid {-4, -2, 0, 2, 4}^2, std 0.05."""
    return _with_heldout(MixtureDataset("grid25", "vector", (2,), torch.empty(0), grid25_centers(), 0.05))


def swissroll() -> SwissRollDataset:
    return _with_heldout(SwissRollDataset("swissroll", "vector", (2,), torch.empty(0)))
