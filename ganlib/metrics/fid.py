"""FID and KID of generated samples against real samples, in the space of a feature extractor.

    extractor = feature_extractor_for("digits", "image")
    scores = fid_kid(real_x, fake_x, extractor, real_stats_cache_key="digits/heldout")
    # {"fid": ..., "kid": ...}

Real-data features are computed once per (cache key, extractor name, sample count) by a
``FeatureStats`` cache: in memory for the process, and optionally on disk. The cache key must
identify the exact real samples (dataset AND split, e.g. "digits/heldout"): a stale key returns
stale statistics.

FID is computed here from float64 statistics rather than by torchmetrics'
``FrechetInceptionDistance(feature=module)``: that class cannot take precomputed real statistics
(the cache), accumulates the covariance as E[xx^T] - mu mu^T (less precise), and calls the module on
a dummy 299x299 image when it lacks ``num_features``. The formula is torchmetrics' (see
``frechet.py``). KID uses torchmetrics' ``poly_mmd`` (cubic polynomial kernel, unbiased MMD^2) on
subsets drawn from a seeded generator: ``KernelInceptionDistance.compute`` draws them from the
global RNG, which would make scores irreproducible and shift the training RNG stream.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .frechet import frechet_distance, gaussian_stats


@dataclass(frozen=True, eq=False)
class FeatureSet:
    """Features of one sample set (float32, CPU; KID needs them) and their float64 Gaussian stats."""

    features: Tensor
    mu: Tensor
    sigma: Tensor

    @classmethod
    def of(cls, features: Tensor) -> FeatureSet:
        features = features.detach().float().cpu()
        return cls(features, *gaussian_stats(features))


@torch.no_grad()
def extract_features(extractor: nn.Module, x: Tensor, batch_size: int = 256) -> Tensor:
    """(N, d) float32 CPU features of ``x``, in batches, on the extractor's device, in eval mode."""
    device = next(extractor.parameters(), torch.empty(0)).device
    was_training = extractor.training
    extractor.eval()
    try:
        return torch.cat([extractor(xb.to(device)).float().cpu() for xb in x.split(batch_size)])
    finally:
        extractor.train(was_training)


class FeatureStats:
    """Cache of real-data ``FeatureSet``s keyed by (key, extractor.name, number of samples).

    ``disk_dir``: also keep them as torch files there (e.g. ``features.cache_dir() / "stats"``),
    so later processes skip the extraction. Entries are never invalidated: the key and the
    extractor name must change when the samples or the weights do.
    """

    def __init__(self, disk_dir: str | Path | None = None) -> None:
        self.disk_dir = None if disk_dir is None else Path(disk_dir).expanduser()
        self._memory: dict[tuple[str, str, int], FeatureSet] = {}

    def get(self, key: str, real_x: Tensor, extractor: nn.Module, batch_size: int = 256) -> FeatureSet:
        full_key = (key, extractor.name, len(real_x))
        if full_key in self._memory:
            return self._memory[full_key]
        path = self._path(full_key, real_x)
        if path is not None and path.exists():
            saved = torch.load(path, map_location="cpu", weights_only=True)
            entry = FeatureSet(saved["features"], saved["mu"], saved["sigma"])
        else:
            entry = FeatureSet.of(extract_features(extractor, real_x, batch_size))
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")  # atomic: parallel trials may race to write it
                torch.save({"features": entry.features, "mu": entry.mu, "sigma": entry.sigma,
                            "key": list(map(str, full_key))}, tmp)
                tmp.replace(path)
        self._memory[full_key] = entry
        return entry

    def _path(self, full_key: tuple[str, str, int], real_x: Tensor) -> Path | None:
        """On disk the samples' own bytes are part of the key: a dataset rewritten at the same path
        (same name, same count) must not get the statistics of the old one. The file is named by a
        digest of it all (a readable prefix first): paths differing only in '/' vs '_' do not meet,
        and a long URI makes no over-long file name."""
        if self.disk_dir is None:
            return None
        key, name, n = full_key
        digest = hashlib.sha256("\0".join((key, name, str(n))).encode())
        digest.update(real_x.detach().cpu().contiguous().numpy().tobytes())
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{key}__{name}")[-80:]
        return self.disk_dir / f"{readable}__n{n}__{digest.hexdigest()[:16]}.pt"


DEFAULT_CACHE = FeatureStats()  # process-wide, memory only: every evaluator in a worker shares it


def _mu_sigma(x) -> tuple[Tensor, Tensor]:
    if isinstance(x, FeatureSet):
        return x.mu, x.sigma
    if isinstance(x, tuple):
        return x
    return gaussian_stats(x)


def fid(gen_features_or_stats, real_stats) -> float:
    """Fréchet distance between two feature sets, each given as (N, d) features, a ``FeatureSet``
    or a (mu, sigma) tuple. NaN if the statistics are not finite (a diverged generator)."""
    (mu1, sigma1), (mu2, sigma2) = _mu_sigma(gen_features_or_stats), _mu_sigma(real_stats)
    if not all(torch.isfinite(t).all() for t in (mu1, sigma1, mu2, sigma2)):
        return math.nan  # eigvals would raise on NaN input
    return frechet_distance(mu1, sigma1, mu2, sigma2)


# KID from the whole kernel matrices when they hold at most this many entries (32 MB in float64):
# a digits evaluation's (359 real, 1,024 fake features) takes 20-35 ms so, against 84 ms subset by subset.
KID_FULL_KERNELS_MAX = 4_000_000


def kid(real_features: Tensor, fake_features: Tensor, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> float:
    """Mean over ``subsets`` of the unbiased MMD^2 (cubic polynomial kernel, torchmetrics' KID) of
    random subsets of ``subset_size`` real and fake features, drawn from ``seed``. ``subset_size``
    is clipped to the smaller set, where torchmetrics would raise. Unbiased: can be slightly < 0.

    Subsets of small sets overlap, so their kernel entries are computed once: each subset's MMD^2
    is then sums of entries of the whole sets' kernel matrices (torchmetrics'
    ``maximum_mean_discrepancy`` over the subset's rows and columns), the same value to float
    rounding. Larger sets (Inception features of a big held-out split) go subset by subset."""
    from torchmetrics.image.kid import poly_kernel, poly_mmd

    real, fake = real_features.detach().double().cpu(), fake_features.detach().double().cpu()
    if not (torch.isfinite(real).all() and torch.isfinite(fake).all()):
        return math.nan
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(real)} real and {len(fake)} fake")
    g = torch.Generator().manual_seed(seed)
    picks = [(torch.randperm(len(real), generator=g)[:m], torch.randperm(len(fake), generator=g)[:m])
             for _ in range(subsets)]
    if (len(real) + len(fake)) ** 2 > KID_FULL_KERNELS_MAX:
        return float(torch.stack([poly_mmd(real[r], fake[f]) for r, f in picks]).mean())
    k_rr, k_ff, k_rf = poly_kernel(real, real), poly_kernel(fake, fake), poly_kernel(real, fake)
    in_r = torch.zeros(subsets, len(real), dtype=torch.float64)  # row s: 1 where subset s took a feature
    in_f = torch.zeros(subsets, len(fake), dtype=torch.float64)
    for s, (r, f) in enumerate(picks):
        in_r[s, r], in_f[s, f] = 1.0, 1.0
    within_r = ((in_r @ k_rr) * in_r).sum(1) - in_r @ k_rr.diagonal()  # off-diagonal sums
    within_f = ((in_f @ k_ff) * in_f).sum(1) - in_f @ k_ff.diagonal()
    across = ((in_r @ k_rf) * in_f).sum(1)
    return float(((within_r + within_f) / (m * (m - 1)) - 2 * across / m**2).mean())


def fid_kid(real_x: Tensor, fake_x: Tensor, extractor: nn.Module, real_stats_cache_key: str | None = None, *,
            cache: FeatureStats | None = None, kid_subsets: int = 100, kid_subset_size: int = 1000,
            seed: int = 0, batch_size: int = 256) -> dict[str, float]:
    """{"fid", "kid"} of samples ``fake_x`` against ``real_x`` in ``extractor``'s feature space.

    With ``real_stats_cache_key`` the real features come from ``cache`` (default: the process-wide
    ``DEFAULT_CACHE``) and are extracted only the first time; without it they are extracted on
    every call."""
    if real_stats_cache_key is None:
        real = FeatureSet.of(extract_features(extractor, real_x, batch_size))
    else:
        real = (cache if cache is not None else DEFAULT_CACHE).get(real_stats_cache_key, real_x, extractor, batch_size)
    return fid_kid_of_features(real, extract_features(extractor, fake_x, batch_size), kid_subsets=kid_subsets,
                               kid_subset_size=kid_subset_size, seed=seed)


def fid_kid_of_features(real: FeatureSet, fake: Tensor, *, with_kid: bool = True, kid_subsets: int = 100,
                        kid_subset_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """{"fid", "kid"} of already extracted (N, d) ``fake`` features against ``real``'s; NaN for
    non-finite features (a diverged generator). ``with_kid=False`` leaves KID out."""
    names = ("fid", "kid") if with_kid else ("fid",)
    if not torch.isfinite(fake).all():
        return dict.fromkeys(names, math.nan)
    scores = {"fid": fid(fake, real)}
    if with_kid:
        scores["kid"] = kid(real.features, fake, kid_subsets, kid_subset_size, seed)
    return scores
