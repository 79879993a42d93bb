"""The confirmation stage: the best configurations of a search, trained again from scratch on
fresh seeds, and ranked by their mean over seeds with its uncertainty.

A search ranks each configuration by one run, and a GAN run's result moves a lot with its seed
(Lucic et al. 2018 re-ran every best configuration on many seeds before comparing anything). So,
after the search, the ``top`` best distinct healthy configurations are trained again with
``seeds`` new seeds each, at the full budget, as ordinary trials of the same sweep (no scheduler;
collapse and divergence still stop a run; no stall stop, so every seed runs its budget).

Per run, the **robust score** is its final ``score``: the mean primary metric over its last
``score_window`` (3) scored evaluations. Per configuration: the mean over its healthy seeds, the
standard deviation and a 95 % t-interval (Student's t with n-1 degrees of freedom), and how many
seeds failed (collapsed or diverged). Configurations are ranked by (any failed seed, mean): a
configuration that fails on some seed ranks after every one that never does. The best is called
distinguishable from the runner-up when their intervals do not overlap; Welch's t-test p-value
is reported beside it. Each run also has a final evaluation on 8x ``eval_samples`` fresh samples
(``final_<metric>``), the headline numbers that no search decision saw.

A cohort sweep (``--cohort K``) confirms in cohorts too (``confirmation_cohorts``): the runs that
share a structure train as stacked members of up to K, each still its own run with its own seed
and its own verdict; a member's trajectory is its solo run's, so the statistics are the same.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from typing import Any

from .config import HELDOUT_SEED, HYPERPARAMS, STRUCTURAL, GanConfig

SEED_OFFSET = 1_000_000  # confirmation seeds: sweep seed + this + j, never a search trial's seed
FINAL_EVAL_FACTOR = 8
CONFIDENCE = 0.95
FAILED = ("collapsed", "diverged", "error")


@dataclass(frozen=True)
class Candidate:
    trial_id: str
    config: dict[str, Any]  # the trial's config (what it trained with)
    score: float  # its best score in the search


def identity(config: dict[str, Any]) -> str:
    """A configuration regardless of its seed and run settings: what makes two trials the same.
    None is GanConfig's "unset": the confirmation stage's param space holds every candidate's keys,
    so Tune gives an RMSprop run ``beta1: None`` when an Adam candidate is confirmed beside it."""
    keep = {k: v for k, v in config.items() if k in STRUCTURAL + HYPERPARAMS and k != "seed" and v is not None}
    return json.dumps(keep, sort_keys=True, default=str)


def pick_candidates(rows: list[dict[str, Any]], configs: dict[str, dict[str, Any]], top: int) -> list[Candidate]:
    """The ``top`` best distinct healthy configurations of the search, by best score."""
    from .report import HEALTHY

    ranked = sorted((r for r in rows if r["status"] in HEALTHY and math.isfinite(r["best_score"])),
                    key=lambda r: r["best_score"])
    out, seen = [], set()
    for row in ranked:
        key = identity(configs[row["trial_id"]])
        if key not in seen:
            seen.add(key)
            out.append(Candidate(row["trial_id"], configs[row["trial_id"]], row["best_score"]))
        if len(out) == top:
            break
    return out


def seeds_for(sweep_seed: int, count: int) -> list[int]:
    """Fresh seeds, past the held-out draw's (a run seeded with it trains on its scoring points)."""
    seeds = (sweep_seed + SEED_OFFSET + j for j in range(count + 1))
    return [s for s in seeds if s != HELDOUT_SEED][:count]


def confirmation_configs(candidates: list[Candidate], seeds: list[int], eval_samples: int,
                         checkpoint_every: int) -> list[dict[str, Any]]:
    """One config per (candidate, seed): the candidate's config with a fresh seed, no scheduler
    checkpoints, no stall stop, and a final evaluation on FINAL_EVAL_FACTOR x eval_samples."""
    out = []
    for candidate in candidates:
        collapse = {**(candidate.config.get("collapse") or {}), "stall_patience": 0}
        for seed in seeds:
            out.append({**candidate.config, "seed": seed, "collapse": collapse, "checkpoint_steps": [],
                        "checkpoint_every": checkpoint_every, "final_eval_samples": FINAL_EVAL_FACTOR * eval_samples})
    return out


def confirmation_cohorts(configs: list[dict[str, Any]], size: int, slots: int | None) -> dict[str, Any]:
    """The confirmation runs as cohort trials of at most ``size`` members: a param space whose
    run settings (the values every run shares) are the trials' base, with a grid over the
    trials' member lists (each member: its run's other values). Runs of one structure
    (``cohort.SHARED``) are split into cohorts of balanced sizes; then, while the cohorts do not
    fill whole rounds of ``slots`` (the trials Tune runs at once), the structure with the largest
    cohorts is split into one more: 9 runs by at most 4 on 2 slots are 3, 2, 2, 2 (two rounds of
    two), not 3, 3, 3 (a slot idle in the second round)."""
    from ray import tune

    from .cohort import MEMBERS_KEY, SHARED
    from .config import GanConfig

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for config in configs:
        resolved = GanConfig.from_dict(config)
        groups.setdefault(tuple(repr(getattr(resolved, k)) for k in SHARED), []).append(config)
    runs = list(groups.values())
    parts = [-(-len(group) // size) for group in runs]
    while slots and sum(parts) % slots and any(p < len(g) for p, g in zip(parts, runs, strict=True)):
        widest = max(range(len(runs)), key=lambda i: -(-len(runs[i]) // parts[i]))  # its largest cohort
        parts[widest] += 1
    cohorts = [chunk for group, n in zip(runs, parts, strict=True) for chunk in _balanced(group, n)]
    keys = {k for c in configs for k in c}
    base = {k: configs[0][k] for k in keys if all(k in c and c[k] == configs[0][k] for c in configs)}
    members = [[{k: v for k, v in c.items() if k not in base} for c in cohort] for cohort in cohorts]
    return {**base, MEMBERS_KEY: tune.grid_search(members)}


def _balanced(items: list, parts: int) -> list[list]:
    """``items`` in ``parts`` consecutive chunks whose sizes differ by at most one."""
    cuts = [len(items) * i // parts for i in range(parts + 1)]
    return [items[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


def confirms(candidates: list[Candidate]) -> dict[str, str]:
    """Configuration identity -> the search trial it confirms (for the child runs' tags)."""
    return {identity(c.config): c.trial_id for c in candidates}


def interval(values: list[float]) -> tuple[float, float, float, float]:
    """(mean, sd, low, high): the 95 % Student-t interval of the mean; NaNs for fewer than 2."""
    from scipy import stats

    n = len(values)
    if n == 0:
        return (math.nan,) * 4
    mean = statistics.fmean(values)
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    sd = statistics.stdev(values)
    half = stats.t.ppf((1 + CONFIDENCE) / 2, n - 1) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def summarize(runs: list[dict[str, Any]], candidates: list[Candidate], primary: str) -> dict[str, Any]:
    """Per candidate, from its confirmation runs ({identity, status, score, final_<primary>, seed}):
    the statistics over seeds, the ranking, and whether the best is distinguishable."""
    from scipy import stats

    table = []
    for candidate in candidates:
        mine = [r for r in runs if r["identity"] == identity(candidate.config)]
        healthy = [r for r in mine if r["status"] not in FAILED and math.isfinite(r["score"])]
        scores = [r["score"] for r in healthy]
        finals = [r[f"final_{primary}"] for r in healthy if math.isfinite(r.get(f"final_{primary}", math.nan))]
        mean, sd, low, high = interval(scores)
        final_mean, final_sd, final_low, final_high = interval(finals)
        table.append({"trial_id": candidate.trial_id, "search_score": candidate.score, "seeds": len(mine),
                      "failed": len(mine) - len(healthy), "scores": scores, "mean": mean, "sd": sd,
                      "ci_low": low, "ci_high": high, f"final_{primary}_mean": final_mean,
                      f"final_{primary}_sd": final_sd, f"final_{primary}_ci_low": final_low,
                      f"final_{primary}_ci_high": final_high, "config": candidate.config})
    # no healthy seed (or no run at all) last, then any failed seed, then the mean
    table.sort(key=lambda t: (not math.isfinite(t["mean"]), t["failed"] > 0, t["mean"]))
    out: dict[str, Any] = {"primary": primary, "confidence": CONFIDENCE, "table": table,
                           "score_of": f"mean of the run's last {_score_window(candidates)} scored evaluations"}
    if table and math.isfinite(table[0]["mean"]):
        out["best"] = table[0]["trial_id"]
        if len(table) > 1 and math.isfinite(table[1]["mean"]):
            first, second = table[0], table[1]
            # either side: a runner-up ranked below for a failed seed may have the better mean
            overlap = first["ci_low"] <= second["ci_high"] and second["ci_low"] <= first["ci_high"] \
                if math.isfinite(first["ci_high"]) and math.isfinite(second["ci_high"]) else True
            p = stats.ttest_ind(first["scores"], second["scores"], equal_var=False).pvalue \
                if len(first["scores"]) > 1 and len(second["scores"]) > 1 else math.nan
            out.update(distinguishable=not overlap, runner_up=second["trial_id"], welch_p=float(p))
    return out


def _score_window(candidates: list[Candidate]) -> int | str:
    windows = {c.config.get("score_window") or GanConfig.score_window for c in candidates}
    return windows.pop() if len(windows) == 1 else "score_window"


def describe(confirmation: dict[str, Any]) -> str:
    """One sentence for the summary: the confirmed best and whether it stands apart."""
    if "best" not in confirmation:
        return "Confirmation: no configuration had a healthy seed."
    first = confirmation["table"][0]
    text = (f"Confirmed best {first['trial_id']}: {confirmation['primary']} {first['mean']:.4g} "
            f"(95% interval {first['ci_low']:.4g} to {first['ci_high']:.4g}) over {len(first['scores'])} seeds")
    if "runner_up" in confirmation:
        second = confirmation["table"][1]
        verdict = "distinguishable from" if confirmation["distinguishable"] else "NOT distinguishable from"
        failed = f", {second['failed']} of {second['seeds']} seeds failed" if second["failed"] else ""
        text += (f", {verdict} the runner-up {second['trial_id']} ({second['mean']:.4g}, interval "
                 f"{second['ci_low']:.4g} to {second['ci_high']:.4g}{failed}; Welch p = {confirmation['welch_p']:.2g})")
    return text
