"""Sample diversity: the mean pairwise distance of a set of features.

A generator that has collapsed onto a few outputs has generated samples much closer to each
other than real samples are; the ratio of the two means is what the collapse rule watches."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def mean_pairwise_distance(features: Tensor, max_samples: int = 1000) -> float:
    """Mean Euclidean distance over all pairs of the first ``max_samples`` rows of (N, d)
    ``features``. NaN for fewer than 2 rows or non-finite features."""
    x = features.detach().reshape(len(features), -1)[:max_samples].float().cpu()
    if len(x) < 2 or not torch.isfinite(x).all():
        return math.nan
    # distances in float32 (relative error ~1e-7, half the time of float64), their mean in float64
    return float(torch.pdist(x).double().mean())
