"""How many seeds separate two configurations? Read from the confirmation stages of real sweeps.

    python bench/seeds_needed.py ARTIFACTS_DIR_OR_confirmation.json [...]

Each confirmation stage (``report/confirmation.json`` on a sweep's parent run) holds, per confirmed
configuration, the robust scores of its seeds. The seed-to-seed spread of one configuration is
what a comparison must beat: per sweep, the within-configuration standard deviation is pooled
over its best two confirmed configurations (each one's own mean removed): the comparison a sweep
is asked to settle. The same pooled over every confirmed configuration is printed beside it (a
configuration with a failing seed inflates it). With that sigma, the
number of seeds per configuration that a two-sided two-sample t-test (alpha 0.05) needs to detect a
difference delta with 80 % power is found from the noncentral t distribution, for deltas of 5, 10
and 20 % of the best configuration's mean, and for the difference the sweep actually saw between
its best and runner-up. Sigma comes from few seeds (its 95 % interval is printed, from the
chi-square distribution): read the counts as an order of magnitude, not a promise.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

ALPHA, POWER, MAX_SEEDS = 0.05, 0.8, 500


def power(n: int, delta: float, sigma: float) -> float:
    """Power of the two-sided two-sample t-test with n seeds per configuration."""
    from scipy import stats

    df = 2 * n - 2
    ncp = delta / (sigma * math.sqrt(2 / n))
    t = stats.t.ppf(1 - ALPHA / 2, df)
    # Both tails as survival functions (P(T <= -t | ncp) = P(T >= t | -ncp)): scipy's noncentral t
    # cdf returns NaN far in its tail (large ncp, few degrees of freedom), its sf does not.
    return float(stats.nct.sf(t, df, ncp) + stats.nct.sf(t, df, -ncp))


def seeds_needed(delta: float, sigma: float) -> int | None:
    if not (delta > 0 and sigma > 0):
        return None
    return next((n for n in range(2, MAX_SEEDS + 1) if power(n, delta, sigma) >= POWER), None)


def pooled_sd(table: list[dict]) -> tuple[float, int]:
    """(pooled within-configuration sd, degrees of freedom) over the confirmed configurations."""
    squares, df = 0.0, 0
    for row in table:
        scores = [s for s in row["scores"] if math.isfinite(s)]
        if len(scores) > 1:
            mean = statistics.fmean(scores)
            squares += sum((s - mean) ** 2 for s in scores)
            df += len(scores) - 1
    return (math.sqrt(squares / df), df) if df else (math.nan, 0)


def sd_interval(sigma: float, df: int) -> tuple[float, float]:
    from scipy import stats

    return (sigma * math.sqrt(df / stats.chi2.ppf(0.975, df)), sigma * math.sqrt(df / stats.chi2.ppf(0.025, df)))


def describe(path: Path) -> dict:
    confirmation = json.loads(path.read_text())
    table = [t for t in confirmation["table"] if math.isfinite(t.get("mean", math.nan))]
    config = table[0]["config"]
    sigma, df = pooled_sd(table[:2])  # the comparison that matters: the best against the runner-up
    sigma_all, df_all = pooled_sd(table)
    best = table[0]["mean"]
    seen = table[1]["mean"] - best if len(table) > 1 else math.nan
    return {"path": str(path), "dataset": config.get("dataset"), "loss": config.get("loss"),
            "primary": confirmation["primary"],
            "configs": len(table), "seeds": [len(t["scores"]) for t in table], "best_mean": best,
            "sigma": sigma, "df": df, "sigma_all": sigma_all, "df_all": df_all,
            "sigma_ci": sd_interval(sigma, df) if df else (math.nan, math.nan),
            "needed": {f"{p:.0%}": seeds_needed(p * best, sigma) for p in (0.05, 0.10, 0.20)},
            "runner_up_gap": seen, "needed_for_gap": seeds_needed(seen, sigma)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="confirmation.json files or folders holding them")
    args = parser.parse_args()
    files = [f for p in args.paths for f in ([p] if p.is_file() else sorted(p.rglob("report/confirmation.json")))]
    if not files:
        raise SystemExit("no report/confirmation.json under the given paths")
    rows = [describe(f) for f in files]
    print(f"seeds per configuration for a two-sided t-test, alpha {ALPHA}, power {POWER:.0%}")
    print(f"{'dataset':8} {'loss':12} {'metric':6} {'best mean':>9} {'sigma, top 2 (95% CI)':>24} "
          f"{'5%':>4} {'10%':>4} {'20%':>4} {'gap to 2nd':>11} {'seeds':>5} {'sigma, all':>10}")
    for r in rows:
        lo, hi = r["sigma_ci"]
        n = r["needed"]
        print(f"{r['dataset']:8} {str(r['loss']):12} {r['primary']:6} "
              f"{r['best_mean']:9.4f} {r['sigma']:8.4f} ({lo:.4f}-{hi:.4f}) "
              f"{_n(n['5%']):>4} {_n(n['10%']):>4} {_n(n['20%']):>4} {r['runner_up_gap']:11.4f} "
              f"{_n(r['needed_for_gap']):>5} {r['sigma_all']:10.4f}   [{r['configs']} configs x {r['seeds']} "
              f"seeds]")
    print(json.dumps(rows, indent=1, default=str))


def _n(n: int | None) -> str:
    return str(n) if n is not None else f">{MAX_SEEDS}"


if __name__ == "__main__":
    main()
