"""Exact and sliced W1, the critic's estimate, rank correlation."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from ganlib.metrics.wasserstein import ConvergenceError, rank_correlation, swd, w1_exact, w_critic


def _cloud(seed, n=80, d=3, scale=1.0, shift=0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale + shift


def test_w1_of_a_translate_is_the_shift_length():
    # f(x) = <x, v/|v|> is 1-Lipschitz and gains exactly |v|, and the identity coupling costs |v|.
    x, v = _cloud(0), torch.tensor([0.3, -1.2, 0.5], dtype=torch.float64)
    assert w1_exact(x, x + v) == pytest.approx(float(v.norm()), abs=1e-6)
    assert w1_exact(x, x) == pytest.approx(0, abs=1e-12)


def test_w1_uses_euclidean_not_squared_cost():
    x = torch.zeros(1, 2)
    assert w1_exact(x, x + torch.tensor([3.0, 4.0])) == pytest.approx(5.0)  # squared cost would give 25


def test_swd_is_a_lower_bound_and_reproducible():
    for seed in range(3):
        x, y = _cloud(seed, d=5), _cloud(seed + 10, d=5, scale=1.5, shift=0.5)
        w1, s = w1_exact(x, y), swd(x, y, n_projections=64, seed=seed)
        assert 0 < s <= w1 + 1e-9
    x, y = _cloud(1, d=5), _cloud(2, d=5, shift=1.0)
    assert swd(x, y, seed=3) == swd(x, y, seed=3) == swd(x.numpy(), y.numpy(), seed=3)
    assert swd(x, y, seed=3) != swd(x, y, seed=4)


def test_convergence_error_at_the_iteration_limit():
    x, y = _cloud(0, n=50), _cloud(1, n=50, shift=1.0)
    with pytest.raises(ConvergenceError, match="max_iter=5"):
        w1_exact(x, y, max_iter=5)
    assert math.isfinite(w1_exact(x, y))


def test_non_finite_samples_give_nan():
    x = _cloud(0)
    y = x.clone()
    y[3, 1] = float("nan")
    assert math.isnan(w1_exact(x, y)) and math.isnan(swd(x, y))


def test_w_critic_is_the_heldout_minus_fake_mean_in_eval_mode():
    critic = nn.Sequential(nn.Dropout(0.5), nn.Linear(3, 1, bias=False))
    nn.init.ones_(critic[1].weight)  # f(x) = x.sum(): easy to compute by hand
    critic.train()
    heldout = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])  # sums 6 and 1: mean 3.5
    fake = torch.tensor([[0.5, 0.5, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])  # sums 1, 3, 0: mean 4/3
    training_batch = torch.full((2, 3), 10.0)  # a different real set must give a different value
    # Exact value: dropout would make it random, so this also proves eval mode.
    assert w_critic(critic, heldout, fake) == pytest.approx(3.5 - 4 / 3, abs=1e-12)
    assert w_critic(critic, training_batch, fake) == pytest.approx(30 - 4 / 3)
    assert critic.training  # mode restored
    assert critic[1].weight.grad is None


def test_rank_correlation():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 35, 90]) == pytest.approx(1.0)
    assert rank_correlation(np.arange(5), -np.exp(np.arange(5))) == pytest.approx(-1.0)
    assert rank_correlation([1, 2, float("nan"), 4, 5], [1, 3, 2, 7, 9]) == pytest.approx(1.0)  # NaN pair dropped
    assert math.isnan(rank_correlation([1, 2], [1, 2]))
    assert math.isnan(rank_correlation([1, 2, 3], [5, 5, 5]))


@pytest.mark.parametrize("n, m", [(300, 300), (1024, 359), (100, 250), (7, 3)])
def test_the_cached_sliced_w1_is_pots_for_any_sizes(n, m):
    from ganlib.metrics.wasserstein import SlicedW1

    g = torch.Generator().manual_seed(n + m)
    fake, real = torch.randn(n, 5, generator=g), torch.randn(m, 5, generator=g) * 1.5 + 0.3
    assert SlicedW1(real, n_projections=32, seed=0)(fake) == pytest.approx(
        swd(fake, real, n_projections=32, seed=0), rel=1e-9)
