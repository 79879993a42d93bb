"""bench/seeds_needed.py: the power of a two-sample t-test against a simulation of that test, and
the pooled seed-to-seed spread against numpy on the same numbers."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

SPEC = importlib.util.spec_from_file_location("seeds_needed", Path(__file__).parents[1] / "bench" / "seeds_needed.py")
seeds_needed = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(seeds_needed)


@pytest.mark.parametrize(("n", "delta", "sigma"), [(3, 0.05, 0.03), (8, 0.02, 0.03), (20, 0.01, 0.02)])
def test_power_matches_a_simulated_t_test(n, delta, sigma):
    rng = np.random.default_rng(0)
    trials = 20_000
    a = rng.normal(0.0, sigma, size=(trials, n))
    b = rng.normal(delta, sigma, size=(trials, n))
    simulated = float(np.mean(stats.ttest_ind(a, b, axis=1).pvalue < seeds_needed.ALPHA))
    assert seeds_needed.power(n, delta, sigma) == pytest.approx(simulated, abs=0.015)


def test_seeds_needed_is_the_smallest_count_reaching_the_power():
    n = seeds_needed.seeds_needed(0.1, 0.1)  # one sigma apart: the textbook answer is 17 per group
    assert n == 17
    assert seeds_needed.power(n, 0.1, 0.1) >= 0.8 > seeds_needed.power(n - 1, 0.1, 0.1)
    assert seeds_needed.seeds_needed(0.0, 0.1) is None


def test_pooled_sd_removes_each_configurations_mean(tmp_path):
    groups = [[0.30, 0.34, 0.32], [0.50, 0.41, 0.47], [0.9, math.nan, 0.7]]
    residuals = np.concatenate([np.array(g)[np.isfinite(g)] - np.nanmean(g) for g in groups])
    sigma, df = seeds_needed.pooled_sd([{"scores": g} for g in groups])
    assert df == 2 + 2 + 1
    assert sigma == pytest.approx(math.sqrt(float(np.sum(residuals**2)) / df))
    path = tmp_path / "report" / "confirmation.json"
    path.parent.mkdir()
    table = [{"scores": g, "mean": float(np.nanmean(g)), "config": {"dataset": "ring8", "loss": "wasserstein"}}
             for g in groups]
    path.write_text(json.dumps({"primary": "w1", "table": table}))
    row = seeds_needed.describe(path)
    assert row["runner_up_gap"] == pytest.approx(table[1]["mean"] - table[0]["mean"])
    top_two, _ = seeds_needed.pooled_sd([{"scores": g} for g in groups[:2]])  # best vs runner-up
    assert (row["sigma"], row["sigma_all"]) == (pytest.approx(top_two), pytest.approx(sigma))
    assert row["needed_for_gap"] == seeds_needed.seeds_needed(row["runner_up_gap"], top_two)


def test_power_is_finite_far_in_the_tail():
    # scipy's nct.cdf is NaN here (2 seeds, ncp 12); the power must still be a number near 1
    assert 0.99 < seeds_needed.power(2, 0.127, 0.0106) <= 1.0
    assert [seeds_needed.seeds_needed(d, 0.0106) for d in (0.0318, 0.0637, 0.127)] == [4, 2, 2]
