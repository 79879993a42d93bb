import math

import torch

from ganlib.data import load_dataset


def test_ring8_is_eight_gaussians_on_a_circle_of_radius_2():
    data = load_dataset("ring8")
    assert data.centers.shape == (8, 2) and data.std == 0.02
    assert torch.allclose(data.centers.norm(dim=1), torch.full((8,), 2.0))
    x = data.sample(8000, torch.Generator().manual_seed(0))
    nearest = torch.cdist(x, data.centers).min(dim=1)
    assert nearest.values.std().item() < 0.05  # tight around the centres
    counts = torch.bincount(nearest.indices, minlength=8)
    assert counts.min() > 800  # equal weights


def test_grid25_centres_and_std():
    data = load_dataset("grid25")
    assert data.std == 0.05 and data.centers.shape == (25, 2)
    assert sorted(set(data.centers[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]


def test_streams_are_reproducible_by_seed_and_heldout_is_fixed():
    a, b = load_dataset("swissroll"), load_dataset("swissroll")
    assert a.sample_shape == (2,) and a.kind == "vector" and a.centers is None
    assert torch.equal(a.sample(5, torch.Generator().manual_seed(1)), b.sample(5, torch.Generator().manual_seed(1)))
    assert not torch.equal(a.sample(5, torch.Generator().manual_seed(1)), a.sample(5, torch.Generator().manual_seed(2)))
    assert torch.equal(a.heldout, b.heldout) and len(a.heldout) == 4096


def test_digits_split_range_and_shape():
    data = load_dataset("digits")
    assert data.kind == "image" and data.sample_shape == (1, 8, 8)
    assert len(data) + len(data.heldout) == 1797 and len(data.heldout) == round(1797 * 0.2)
    assert data.train.min().item() == -1.0 and data.train.max().item() == 1.0
    assert torch.equal(data.heldout, load_dataset("digits").heldout)  # fixed split
    # no held-out image appears in the training set
    train_keys = {tuple(x.flatten().tolist()) for x in data.train}
    overlap = sum(tuple(x.flatten().tolist()) in train_keys for x in data.heldout)
    assert overlap <= 5  # sklearn digits has a handful of exact duplicate images
    batch = data.sample(16, torch.Generator().manual_seed(0))
    assert batch.shape == (16, 1, 8, 8) and batch.dtype == torch.float32
    assert math.isclose(batch.abs().max().item(), 1.0, abs_tol=1e-6)
