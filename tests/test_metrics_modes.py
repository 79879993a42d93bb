"""Mode statistics of 2-D mixtures against a hand count."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from ganlib.data import load_dataset
from ganlib.metrics.diversity import mean_pairwise_distance
from ganlib.metrics.modes import mode_stats


def test_three_of_eight_modes_with_off_mode_junk():
    ring = load_dataset("ring8")
    g = torch.Generator().manual_seed(0)
    counts = {0: 100, 3: 50, 6: 50}  # samples placed on 3 of the 8 modes, within 3 std
    parts = [ring.centers[k] + ring.std * torch.randn(n, 2, generator=g).clamp(-2, 2) for k, n in counts.items()]
    junk = torch.zeros(40, 2)  # the origin is 2 (= 100 std) from every centre: never high quality
    stats = mode_stats(torch.cat([*parts, junk]), ring.centers, ring.std)
    assert stats["modes"] == 3
    assert stats["hq"] == pytest.approx(200 / 240)
    p = [counts.get(k, 0) / 200 for k in range(8)]
    # reverse KL of the mode histogram to the uniform one, by scipy: sum p log(p / (1/8))
    assert stats["rkl"] == pytest.approx(entropy(p, [1 / 8] * 8))
    assert stats["rkl"] == pytest.approx(0.5 * math.log(4) + 0.5 * math.log(2))


def test_uniform_coverage_has_zero_rkl_and_no_hq_sample_is_the_worst_case():
    ring = load_dataset("ring8")
    stats = mode_stats(ring.centers.repeat(5, 1), ring.centers, ring.std)
    assert stats == {"modes": 8.0, "hq": 1.0, "rkl": pytest.approx(0.0, abs=1e-12)}
    far = mode_stats(torch.full((10, 2), 50.0), ring.centers, ring.std)
    assert far == {"modes": 0.0, "hq": 0.0, "rkl": pytest.approx(math.log(8))}


def test_mean_pairwise_distance():
    square = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # 4 sides of length 1 and 2 diagonals of sqrt(2)
    assert mean_pairwise_distance(square) == pytest.approx((4 + 2 * math.sqrt(2)) / 6)
    assert mean_pairwise_distance(torch.ones(5, 3)) == 0.0
    assert math.isnan(mean_pairwise_distance(torch.ones(1, 3)))


@pytest.mark.parametrize("dim", [2, 8, 9, 64])  # scipy's pdist up to 8 features, torch's beyond
def test_mean_pairwise_distance_of_points_and_of_features_against_numpy(dim):
    x = torch.randn(300, dim, generator=torch.Generator().manual_seed(dim)) * 3
    points = x.double().numpy()
    distances = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(-1))
    expected = distances[np.triu_indices(len(points), 1)].mean()
    assert mean_pairwise_distance(x) == pytest.approx(expected, rel=1e-6)
    first = distances[:100, :100][np.triu_indices(100, 1)].mean()
    assert mean_pairwise_distance(x, max_samples=100) == pytest.approx(first, rel=1e-6)
