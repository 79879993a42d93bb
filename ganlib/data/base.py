"""What every dataset provides: a training stream, a held-out set and its sample shape."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def to_unit_range(x: Tensor) -> Tensor:
    """uint8 pixels [0, 255] -> float32 [-1, 1]; float input is returned as float32."""
    if x.dtype == torch.uint8:
        return x.float().div_(127.5).sub_(1.0)
    return x.float()


@dataclass(eq=False)
class Dataset:
    """Base class. ``sample`` draws a fresh training batch from ``generator`` (a CPU
    ``torch.Generator``), so the stream is reproducible and checkpointable by that
    generator's state alone.

    ``kind`` is "vector" (samples are 1-D) or "image" (C, H, W in [-1, 1]). Mixtures expose
    ``centers`` (modes x dims) and ``std`` so metrics can score mode coverage.
    """

    name: str
    kind: str
    sample_shape: tuple[int, ...]
    heldout: Tensor
    centers: Tensor | None = None
    std: float | None = None

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError


@dataclass(eq=False)
class TensorDataset(Dataset):
    """A finite training set held in memory; batches are drawn uniformly with replacement
    (the i.i.d. minibatches of Algorithm 1, with no epoch state to checkpoint)."""

    train: Tensor | None = None  # uint8 pixels or float32 values, first dim = samples

    def __post_init__(self) -> None:
        if self.train is None or len(self.train) == 0:
            raise ValueError(f"dataset {self.name!r} has no training samples")
        self.heldout = to_unit_range(self.heldout)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        index = torch.randint(len(self.train), (n,), generator=generator)
        return to_unit_range(self.train[index])

    def __len__(self) -> int:
        return len(self.train)


def split_heldout(x: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """A fixed (train, held-out) split by a seeded permutation."""
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_held = max(1, int(round(len(x) * fraction)))
    return x[perm[n_held:]], x[perm[:n_held]]
