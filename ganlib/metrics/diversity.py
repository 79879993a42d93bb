"""Sample diversity: the mean pairwise distance of a set of features.

A generator that has collapsed onto a few outputs has generated samples much closer to each
other than real samples are; the ratio of the two means is what the collapse rule watches."""

from __future__ import annotations

import math

import torch
from torch import Tensor

SCIPY_MAX_DIM = 8  # up to this many features per row, scipy's pdist is the faster (see below)


def mean_pairwise_distance(features: Tensor, max_samples: int = 1000) -> float:
    """Mean Euclidean distance over all pairs of the first ``max_samples`` rows of (N, d)
    ``features``. NaN for fewer than 2 rows or non-finite features."""
    x = features.detach().reshape(len(features), -1)[:max_samples].float().cpu()
    if len(x) < 2 or not torch.isfinite(x).all():
        return math.nan
    if x.shape[1] <= SCIPY_MAX_DIM:  # 2-D points: scipy's loop is 5x torch's (2 ms against 10 at 1,000)
        from scipy.spatial.distance import pdist

        return float(pdist(x.double().numpy()).mean())
    # network features: torch's is 3x scipy's; distances in float32 (relative error ~1e-7, half the
    # time of float64), their mean in float64
    return float(torch.pdist(x).double().mean())
