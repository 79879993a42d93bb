"""Fréchet distance, FID / KID and the real-statistics cache."""

import numpy as np
import pytest
import scipy.linalg
import torch

from ganlib.metrics.features import IdentityFeatures
from ganlib.metrics.fid import FeatureSet, FeatureStats, fid, fid_kid, kid
from ganlib.metrics.frechet import frechet_distance, gaussian_stats


def _spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_diagonal_gaussians_match_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 3, size=5), rng.uniform(0.1, 3, size=5)
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    got = frechet_distance(torch.tensor(mu1), torch.tensor(np.diag(s1)), torch.tensor(mu2), torch.tensor(np.diag(s2)))
    assert got == pytest.approx(expected, rel=1e-10)


def test_full_covariances_match_scipy_sqrtm():
    rng = np.random.default_rng(1)
    mu1, mu2, a, b = rng.normal(size=6), rng.normal(size=6), _spd(rng, 6), _spd(rng, 6)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(a + b - 2 * scipy.linalg.sqrtm(a @ b).real)
    got = frechet_distance(*(torch.tensor(t) for t in (mu1, a, mu2, b)))
    assert got == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(torch.tensor(mu1), torch.tensor(a), torch.tensor(mu1), torch.tensor(a)) == pytest.approx(
        0, abs=1e-9)


def test_gaussian_stats_are_float64_mean_and_unbiased_covariance():
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(0)) * 3 + 100
    mu, sigma = gaussian_stats(x)
    assert mu.dtype == sigma.dtype == torch.float64
    np.testing.assert_allclose(mu.numpy(), x.double().numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x.double().numpy(), rowvar=False), rtol=1e-10)


def test_fid_of_a_set_with_itself_is_zero_and_of_a_translate_is_the_squared_shift():
    f = torch.randn(500, 16, generator=torch.Generator().manual_seed(0))
    assert fid(f, FeatureSet.of(f)) == pytest.approx(0, abs=1e-8)
    shift = torch.linspace(-1, 1, 16)
    assert fid(f + shift, FeatureSet.of(f)) == pytest.approx(float(shift.square().sum()), rel=1e-6)
    assert np.isnan(fid(torch.full((10, 16), float("nan")), FeatureSet.of(f)))


def test_fid_agrees_with_torchmetrics_on_a_custom_feature_module():
    from torchmetrics.image.fid import FrechetInceptionDistance

    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g) * 1.5 + 0.3
    metric = FrechetInceptionDistance(feature=IdentityFeatures(num_features=8))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    assert fid(fake, real) == pytest.approx(float(metric.compute()), rel=1e-5)


def test_kid_near_zero_for_identical_distributions_and_positive_for_different_ones():
    g = torch.Generator().manual_seed(0)
    real, other = torch.randn(1000, 16, generator=g), torch.randn(1000, 16, generator=g)
    rng_state = torch.get_rng_state()
    assert abs(kid(real, other, subsets=10, subset_size=500)) < 0.01  # same distribution
    # The very same samples: the unbiased estimator is off by ~ -2 (E k(x,x) - E k(x,y)) / m.
    assert abs(kid(real, real.clone(), subsets=10, subset_size=1000)) < 0.02
    different = kid(real, other + 0.3, subsets=10, subset_size=500)
    assert different > 0.2
    assert kid(real, other + 0.3, subsets=10, subset_size=500) == different  # seeded subsets
    assert torch.equal(torch.get_rng_state(), rng_state)  # global RNG untouched


@pytest.mark.parametrize("n_real, n_fake, size", [(359, 1024, 1000), (300, 200, 150), (40, 40, 40)])
def test_kid_from_whole_kernels_equals_torchmetrics_subset_by_subset(monkeypatch, n_real, n_fake, size):
    """The whole-kernel path against torchmetrics' poly_mmd on each of the same seeded subsets (the
    path larger sets take), drawn here independently."""
    from torchmetrics.image.kid import poly_mmd

    import ganlib.metrics.fid as fid_module

    g = torch.Generator().manual_seed(2)
    real, fake = torch.randn(n_real, 16, generator=g), torch.randn(n_fake, 16, generator=g) * 1.2 + 0.2
    m, draws = min(size, n_real, n_fake), torch.Generator().manual_seed(7)
    expected = []
    for _ in range(20):
        r, f = torch.randperm(n_real, generator=draws)[:m], torch.randperm(n_fake, generator=draws)[:m]
        expected.append(float(poly_mmd(real.double()[r], fake.double()[f])))
    whole = kid(real, fake, subsets=20, subset_size=size, seed=7)
    assert whole == pytest.approx(sum(expected) / 20, rel=1e-10, abs=1e-13)
    monkeypatch.setattr(fid_module, "KID_FULL_KERNELS_MAX", 0)  # every set "large": subset by subset
    assert kid(real, fake, subsets=20, subset_size=size, seed=7) == pytest.approx(whole, rel=1e-10, abs=1e-13)


def test_kid_matches_torchmetrics_on_full_sets():
    # With subset_size = all samples every subset is the whole set, so torchmetrics' random
    # permutations cannot change its value: the two must agree exactly.
    from torchmetrics.image.kid import KernelInceptionDistance

    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(64, 8, generator=g), torch.randn(64, 8, generator=g) + 0.5
    with pytest.warns(UserWarning):  # torchmetrics warns that it buffers all features
        metric = KernelInceptionDistance(feature=IdentityFeatures(), subsets=1, subset_size=64)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    # torchmetrics returns float32
    assert kid(real, fake, subsets=1, subset_size=64) == pytest.approx(float(metric.compute()[0]), rel=1e-6)


class CountingIdentity(IdentityFeatures):
    def __init__(self):
        super().__init__()
        self.rows = 0

    def forward(self, x):
        self.rows += len(x)
        return super().forward(x)


def test_real_stats_are_computed_once_per_key(tmp_path):
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(300, 4, generator=g), torch.randn(100, 4, generator=g)
    extractor, cache = CountingIdentity(), FeatureStats(disk_dir=tmp_path)
    first = fid_kid(real, fake, extractor, "toy/heldout", cache=cache, kid_subsets=5, kid_subset_size=50)
    assert extractor.rows == 300 + 100
    second = fid_kid(real, fake, extractor, "toy/heldout", cache=cache, kid_subsets=5, kid_subset_size=50)
    assert extractor.rows == 300 + 100 + 100  # only the fake samples again
    assert first == second and first["fid"] > 0

    fid_kid(real[:200], fake, extractor, "toy/heldout", cache=cache, kid_subsets=5, kid_subset_size=50)
    assert extractor.rows == 300 + 3 * 100 + 200  # another sample count is another entry

    # A new process (new cache object) reads the disk copy instead of extracting again.
    fresh = CountingIdentity()
    entry = FeatureStats(disk_dir=tmp_path).get("toy/heldout", real, fresh)
    assert fresh.rows == 0
    assert torch.equal(entry.sigma, cache.get("toy/heldout", real, extractor).sigma)

    # the same key, other samples (a dataset rewritten at its path): not the old statistics
    rewritten = FeatureStats(disk_dir=tmp_path).get("toy/heldout", real + 1.0, CountingIdentity())
    assert torch.allclose(rewritten.mu, entry.mu + 1.0)
    # keys that differ only where a file name cannot ('/' vs '_'), and a key longer than a file name
    one = FeatureStats(disk_dir=tmp_path).get("parquet:/data/cats/v2.parquet/heldout", real, CountingIdentity())
    other = FeatureStats(disk_dir=tmp_path).get("parquet:/data/cats_v2.parquet/heldout", real, CountingIdentity())
    assert torch.equal(one.mu, other.mu) and len(list(tmp_path.glob("*cats*"))) == 2  # two entries, not one
    FeatureStats(disk_dir=tmp_path).get("parquet:s3://bucket/" + "x" * 300 + "/heldout", real, CountingIdentity())

    uncached = CountingIdentity()
    fid_kid(real, fake, uncached, kid_subsets=5, kid_subset_size=50)
    fid_kid(real, fake, uncached, kid_subsets=5, kid_subset_size=50)
    assert uncached.rows == 2 * (300 + 100)
