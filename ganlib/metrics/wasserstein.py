"""Wasserstein-1 estimates between sample sets, and the critic's own estimate of it.

* ``w1_exact``: exact W1 between the two empirical distributions (network simplex, O(n^3)-ish:
  fine for the few thousand points of an evaluation).
* ``swd``: sliced W1, a Monte-Carlo LOWER estimate of W1 (each 1-D projection is 1-Lipschitz), for
  high-dimensional data where exact OT is too slow; ``SlicedW1`` is the same value against a FIXED
  real set whose projections are sorted once (what an evaluator needs every time).
* ``w_critic``: E f(real) - E f(fake) of a WGAN critic on HELD-OUT real data.
* ``rank_correlation``: Spearman correlation, e.g. between ``w_critic`` and ``w1`` over a run.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

# POT's emd result codes (ot.lp.emd_wrap.check_result): 1 is optimal.
_OPTIMAL, _MAX_ITER_REACHED = 1, 3


class ConvergenceError(RuntimeError):
    """The exact OT solver stopped at its iteration limit: its value is not W1 (POT only warns)."""


def _as_points(x) -> np.ndarray:
    """(N, D) float64 numpy array of samples (images are flattened)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1)


def w1_exact(x, y, max_iter: int = 1_000_000) -> float:
    """Exact W1 between the uniform empirical distributions of ``x`` (N, ...) and ``y`` (M, ...).

    Cost is the Euclidean distance (POT's default cost is the SQUARED distance, which gives W2^2),
    from scipy's cdist: ``ot.dist``'s |x|^2 + |y|^2 - 2xy form loses ~1e-8 to cancellation.
    Returns NaN if any sample is non-finite (a diverged generator); raises ``ConvergenceError``
    if the solver hits ``max_iter``.
    """
    import ot
    from scipy.spatial.distance import cdist

    xs, ys = _as_points(x), _as_points(y)
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        return math.nan
    a = np.full(len(xs), 1.0 / len(xs))
    b = np.full(len(ys), 1.0 / len(ys))
    cost = cdist(xs, ys, metric="euclidean")
    with warnings.catch_warnings():
        # POT reports failures only as UserWarnings; we read the result code instead.
        warnings.simplefilter("ignore", UserWarning)
        value, log = ot.emd2(a, b, cost, numItermax=max_iter, log=True)
    code = log["result_code"]
    if code == _MAX_ITER_REACHED:
        raise ConvergenceError(f"exact OT stopped at max_iter={max_iter} before optimality "
                               f"({len(xs)} x {len(ys)} points); raise max_iter or use swd")
    if code != _OPTIMAL:
        raise RuntimeError(f"exact OT failed: {log['warning']} (result code {code})")
    return float(value)


def swd(x, y, n_projections: int = 256, seed: int = 0) -> float:
    """Sliced W1 over ``n_projections`` random directions drawn from ``seed`` (<= w1_exact).

    Inputs go to float64 numpy so the same seed gives the same directions whatever the input type
    (POT draws them from the backend of its inputs: numpy and torch would differ)."""
    import ot

    xs, ys = _as_points(x), _as_points(y)
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        return math.nan
    return float(ot.sliced_wasserstein_distance(xs, ys, n_projections=n_projections, p=1, seed=seed))


class SlicedW1:
    """``swd(fake, real, n_projections, seed)`` against a fixed ``real`` set: POT's directions for
    ``seed``, the real projections sorted once. Per direction, the 1-D W1 between two uniform
    empirical measures is the integral over t in (0, 1] of the distance between their quantile
    functions, a step function with steps at i/n and j/m: what POT computes (for equal sizes, the
    mean absolute difference of the sorted projections)."""

    def __init__(self, real, n_projections: int = 256, seed: int = 0):
        from ot.sliced import get_random_projections

        points = _as_points(real)
        self.m = len(points)
        self.projections = get_random_projections(points.shape[1], n_projections, seed=seed)
        self.real_sorted = np.sort(points @ self.projections, axis=0)
        self._grids: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _grid(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indices into the fake quantiles, into the real ones, widths) of the merged steps."""
        if n not in self._grids:
            t = np.union1d(np.arange(1, n + 1) / n, np.arange(1, self.m + 1) / self.m)
            widths = np.diff(np.concatenate([[0.0], t]))
            fake = np.minimum(np.ceil(t * n - 1e-9).astype(int) - 1, n - 1)
            real = np.minimum(np.ceil(t * self.m - 1e-9).astype(int) - 1, self.m - 1)
            self._grids[n] = (fake, real, widths)
        return self._grids[n]

    def __call__(self, fake) -> float:
        points = _as_points(fake)
        if not np.isfinite(points).all():
            return math.nan
        fake_sorted = np.sort(points @ self.projections, axis=0)
        if len(points) == self.m:
            return float(np.abs(fake_sorted - self.real_sorted).mean())
        i, j, widths = self._grid(len(points))
        return float((np.abs(fake_sorted[i] - self.real_sorted[j]) * widths[:, None]).sum(0).mean())


def critic_outputs(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(critic(real), critic(fake)) in float64, in eval mode under no_grad; the mode is restored."""
    device = next(critic.parameters(), torch.empty(0)).device
    was_training = critic.training
    critic.eval()
    try:
        with torch.no_grad():
            return critic(real.to(device)).double(), critic(fake.to(device)).double()
    finally:
        critic.train(was_training)


def w_critic(critic: nn.Module, heldout_real: torch.Tensor, fake: torch.Tensor) -> float:
    """mean critic(heldout_real) - mean critic(fake): the critic's W1 estimate.

    Uses held-out real data, never the training batches the critic was fitted on (on those its
    estimate is biased upward). Evaluated in eval mode under no_grad; the mode is restored."""
    real_out, fake_out = critic_outputs(critic, heldout_real, fake)
    return float(real_out.mean() - fake_out.mean())


def rank_correlation(a, b) -> float:
    """Spearman rank correlation of paired values; pairs with a non-finite value are dropped.
    NaN when fewer than 3 pairs remain or either side is constant (undefined, not 0)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"rank_correlation needs paired values, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(spearmanr(a, b).statistic)
