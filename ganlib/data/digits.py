"""scikit-learn's bundled 8x8 digits (1,797 images, offline), scaled to [-1, 1]."""

from __future__ import annotations

import torch

from .base import TensorDataset, split_heldout

HELDOUT_FRACTION = 0.2
SPLIT_SEED = 0  # fixed: every trial and the feature extractor see the same split


def digits() -> TensorDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are 0..16; map to [-1, 1] like every other image dataset.
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    train, heldout = split_heldout(images, HELDOUT_FRACTION, SPLIT_SEED)
    return TensorDataset("digits", "image", (1, 8, 8), heldout, train=train)


def digits_with_labels() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_y, heldout_x, heldout_y) on the same split as ``digits()``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    index = torch.arange(len(images))
    train_i, held_i = split_heldout(index, HELDOUT_FRACTION, SPLIT_SEED)
    return images[train_i], labels[train_i], images[held_i], labels[held_i]
