"""Mode statistics for Gaussian mixtures (VEEGAN / PacGAN protocol).

A sample is high quality when it lies within 3 std of its nearest mode centre; a mode is
covered when at least one high-quality sample is nearest to it. ``rkl`` is the KL divergence
from the generated mode histogram (high-quality samples only) to the uniform one over modes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def mode_stats(samples: Tensor, centers: Tensor, std: float, threshold: float = 3.0) -> dict[str, float]:
    samples, centers = samples.double().cpu(), centers.double().cpu()
    dist = torch.cdist(samples, centers)
    nearest_dist, nearest = dist.min(dim=1)
    high_quality = nearest_dist <= threshold * std
    counts = torch.bincount(nearest[high_quality], minlength=len(centers)).double()
    n_hq = counts.sum().item()
    if n_hq == 0:
        # No high-quality sample: nothing covered; the histogram is undefined, so rkl is the
        # worst finite value the metric takes (all mass on one mode): log(#modes).
        return {"modes": 0.0, "hq": 0.0, "rkl": math.log(len(centers))}
    p = counts / n_hq
    covered = p > 0
    rkl = (p[covered] * (p[covered] * len(centers)).log()).sum().item()
    return {"modes": float(covered.sum().item()), "hq": n_hq / len(samples), "rkl": rkl}
