"""Rules that end a run early, each with a human reason.

The detector sees one evaluation's metrics at a time (``update``) and keeps the history it
needs. Verdicts are sticky: once a run is flagged it stays flagged. Thresholds are the config
field ``collapse`` (``config.CollapseRules``), validated before a run starts.

Verdicts:

* ``diverged``: non-finite values, a blow-up of the critic or the gradients, or a score beyond
  the ceiling (``ceiling_factor`` x the best constant generator's score);
* ``collapsed``: the minimax discriminator saturated, few modes covered precisely, samples
  shrunk towards a point, or samples that stay no closer to the data than a single point at
  the data mean ("far from the data");
* ``stalled``: the score stopped improving. The run has converged (or plateaued): a normal early
  stop whose result is the best score it reached, not a failure.

``baseline`` is the primary metric of the best constant generator (every sample at the data
mean): the far-from-data rule and the ceiling are multiples of it, so they mean the same on
every dataset and feature space.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from .config import CollapseRules

OK, STALLED, COLLAPSED, DIVERGED = "ok", "stalled", "collapsed", "diverged"
FAILED = (COLLAPSED, DIVERGED)


def _finite(value: Any) -> bool:
    return not isinstance(value, (int, float)) or math.isfinite(value)


class CollapseDetector:
    """``update(metrics) -> (status, reason)`` at every evaluation.

    ``primary`` names the metric the run is scored on (a distance: lower is better);
    ``baseline`` is its value for the best constant generator; ``n_modes`` is the mixture's
    number of modes (None for other data); ``saturating`` says the generator's loss is the
    minimax one, whose gradient vanishes when the discriminator wins."""

    def __init__(self, rules: CollapseRules, primary: str, baseline: float, n_modes: int | None = None,
                 saturating: bool = False, eval_every: int | None = None):
        """``eval_every``: the run's evaluation cadence. With it the far-from-data rule asks for
        ``far_patience`` evaluations' worth of steps, (patience - 1) x eval_every, between the first
        and the last far evaluation of a streak, not that many evaluations: a primary metric
        computed at scored evaluations only (exact W1, every ``score_every`` steps) is then judged
        over the same stretch of training as one computed at every evaluation."""
        self.rules, self.primary, self.baseline = rules, primary, baseline
        self.n_modes, self.saturating, self.eval_every = n_modes, saturating, eval_every
        self.history: list[dict[str, Any]] = []
        self.status, self.reason = OK, ""
        self._best: float | None = None
        self._since_best = 0
        self._saturated_for = 0
        self._far_for = 0
        self._far_since: int | None = None  # step of the streak's first far evaluation
        self._few_modes_for = 0

    @property
    def ceiling(self) -> float:
        """No healthy run scores above this; a failed run's penalty is 10x it."""
        return self.rules.ceiling_factor * self.baseline

    def update(self, metrics: dict[str, Any], params_finite: bool = True) -> tuple[str, str]:
        if self.status == OK:
            verdict = self._check(metrics, params_finite)
            if verdict is not None:
                self.status, self.reason = verdict
        # No rule looks further back than the blow-up window: keep no more (and checkpoint no more).
        self.history = [*self.history, metrics][-max(self.rules.blowup_window, 1):]
        return self.status, self.reason

    def state_dict(self) -> dict[str, Any]:
        """Plain values only (``torch.load(weights_only=True)`` reads them back)."""
        history = [{k: v for k, v in m.items() if isinstance(v, (int, float, str))} for m in self.history]
        return {"history": history, "status": self.status, "reason": self.reason, "best": self._best,
                "since_best": self._since_best, "saturated_for": self._saturated_for, "far_for": self._far_for,
                "far_since": self._far_since, "few_modes_for": self._few_modes_for}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])
        self.status, self.reason = state["status"], state["reason"]
        self._best, self._since_best = state["best"], state["since_best"]
        self._saturated_for = state["saturated_for"]
        self._far_for = state.get("far_for", 0)
        self._far_since = state.get("far_since")
        self._few_modes_for = state.get("few_modes_for", 0)

    # -- the rules, in order of severity ------------------------------------------------------
    def _check(self, m: dict[str, Any], params_finite: bool) -> tuple[str, str] | None:
        return (self._check_divergence(m, params_finite) or self._check_saturation(m) or self._check_collapse(m)
                or self._check_stall(m))

    def _check_divergence(self, m: dict[str, Any], params_finite: bool) -> tuple[str, str] | None:
        r, step = self.rules, m.get("step")
        bad = sorted(k for k, v in m.items() if not _finite(v))
        if bad:
            return DIVERGED, f"non-finite {', '.join(bad)} at step {step}"
        if not params_finite:
            return DIVERGED, f"non-finite network parameters at step {step}"
        value = m.get(self.primary)
        if value is not None and value >= self.ceiling:
            return DIVERGED, (f"{self.primary} = {value:.4g} at step {step} is beyond {self.ceiling:.4g}, "
                              f"{r.ceiling_factor:g}x the score of a constant generator")
        for name in ("w_critic", "grad_norm_d", "grad_norm_g") if r.blowup_window else ():  # 0 disables
            recent = [abs(h[name]) for h in self.history[-r.blowup_window:] if name in h]
            if name in m and len(recent) >= min(3, r.blowup_window):
                reference = max(statistics.median(recent), r.blowup_floor)
                if abs(m[name]) > r.blowup_factor * reference:
                    return DIVERGED, (f"{name} = {m[name]:.4g} at step {step} is over {r.blowup_factor:g}x "
                                      f"its recent median {reference:.4g}")
        return None

    def _check_saturation(self, m: dict[str, Any]) -> tuple[str, str] | None:
        r = self.rules
        if not self.saturating or "d_fake" not in m or "loss_d" not in m:
            return None
        saturated = m["loss_d"] < r.saturation_loss_d and m["d_fake"] < r.saturation_d_fake
        self._saturated_for = self._saturated_for + 1 if saturated else 0
        if self._saturated_for >= r.saturation_patience:
            return COLLAPSED, (f"discriminator saturated for {self._saturated_for} evaluations (loss_d = "
                               f"{m['loss_d']:.3g}, D(G(z)) = {m['d_fake']:.3g}): the minimax generator's "
                               f"gradient vanishes")
        return None

    def _check_collapse(self, m: dict[str, Any]) -> tuple[str, str] | None:
        r, step = self.rules, m.get("step", 0)
        if step < r.warmup_steps:
            return None
        if self.n_modes and "modes" in m:
            few = m["modes"] <= r.min_mode_fraction * self.n_modes and m.get("hq", 1.0) >= r.mode_collapse_hq
            self._few_modes_for = self._few_modes_for + 1 if few else 0
            if self._few_modes_for >= max(r.mode_patience, 1):  # the count is 0 unless this one is few
                return COLLAPSED, (f"mode collapse: {m['modes']:g} of {self.n_modes} modes covered by the "
                                   f"{m.get('hq', 1.0):.0%} high-quality samples at step {step} (limit "
                                   f"{r.min_mode_fraction:g} x {self.n_modes}), {self._few_modes_for} "
                                   f"evaluations in a row")
        if "diversity" in m and m["diversity"] < r.min_diversity:
            return COLLAPSED, (f"sample diversity {m['diversity']:.3g} of the real data's at step {step} "
                               f"(limit {r.min_diversity:g})")
        value = m.get(self.primary)
        if r.far_patience and value is not None:
            far = value >= r.far_factor * self.baseline
            self._far_for = self._far_for + 1 if far else 0
            self._far_since = (step if self._far_since is None else self._far_since) if far else None
            long_enough = self._far_for >= r.far_patience if self.eval_every is None else \
                far and step - self._far_since >= (r.far_patience - 1) * self.eval_every
            if long_enough:
                return COLLAPSED, (f"far from the data: {self.primary} = {value:.4g} at step {step}, no better "
                                   f"than a single point at the data mean ({self.baseline:.4g}) at "
                                   f"{self._far_for} evaluations in a row, from step {self._far_since}")
        return None

    def _check_stall(self, m: dict[str, Any]) -> tuple[str, str] | None:
        score = m.get("score")
        if score is None or self.rules.stall_patience == 0:
            return None
        if self._best is None or score < self._best - self.rules.stall_min_delta * abs(self._best):
            self._best, self._since_best = score, 0
            return None
        self._since_best += 1
        if self._since_best >= self.rules.stall_patience:
            return STALLED, (f"stalled: the score ({self.primary}) has not improved on {self._best:.4g} for "
                             f"{self._since_best} evaluations")
        return None
