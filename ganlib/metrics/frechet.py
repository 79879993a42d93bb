"""Fréchet distance between two Gaussians, the core of FID, in float64."""

from __future__ import annotations

import torch
from torch import Tensor


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """(mean, covariance) of (N, d) features in float64, unbiased (N - 1) like torchmetrics and
    pytorch-fid. Centred before the product: E[xx^T] - mu mu^T loses precision when |mu| is large."""
    x = torch.as_tensor(features).detach().reshape(len(features), -1).to(torch.float64)
    if len(x) < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {len(x)}")
    mu = x.mean(dim=0)
    centred = x - mu
    return mu, centred.T @ centred / (len(x) - 1)


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2}).

    Same formula as torchmetrics 1.9's private ``_compute_fid``: Tr sqrt(sigma1 sigma2) is the sum of
    the square roots of the eigenvalues of sigma1 @ sigma2 (real and >= 0 in exact arithmetic, as
    both are PSD). Taking complex eigenvalues and the real part of their square roots turns the tiny
    negative or complex round-off values of a singular covariance into ~0 instead of NaN, with no
    matrix square root (scipy's sqrtm needs an epsilon offset and can return complex junk).
    """
    mu1, sigma1, mu2, sigma2 = (torch.as_tensor(t).detach().cpu().to(torch.float64)
                                for t in (mu1, sigma1, mu2, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shape mismatch: mu {tuple(mu1.shape)}/{tuple(mu2.shape)}, "
                         f"sigma {tuple(sigma1.shape)}/{tuple(sigma2.shape)}")
    mean_term = (mu1 - mu2).square().sum()
    trace_sqrt = torch.linalg.eigvals(sigma1 @ sigma2).sqrt().real.sum()
    return float(mean_term + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt)
