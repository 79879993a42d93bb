"""Rules that call a run collapsed or diverged, with a human reason.

The detector sees one evaluation's metrics at a time (``update``) and keeps the history it
needs. Verdicts are sticky: once a run is flagged it stays flagged. Thresholds are the
config field ``collapse`` (a dict of ``CollapseRules`` fields), validated before a run starts.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, fields
from typing import Any

from .config import ConfigError

OK, COLLAPSED, DIVERGED = "ok", "collapsed", "diverged"


@dataclass(frozen=True)
class CollapseRules:
    # critic estimate / gradient norm blowing up relative to its own recent history
    blowup_factor: float = 50.0  # value > factor * median of the last `blowup_window`
    blowup_window: int = 5  # evaluations; 0 disables the rule
    blowup_floor: float = 1e-3  # medians below this are taken as this (avoid 0 * factor)
    # vanilla GAN: D wins outright; the minimax generator's gradient then vanishes
    saturation_loss_d: float = 0.05  # loss_d below this (a perfect D has loss 0)
    saturation_d_fake: float = 0.02  # mean D(G(z)) below this
    saturation_patience: int = 3  # consecutive evaluations
    # mixtures: at most this fraction of the modes covered while at least `mode_collapse_hq` of the
    # samples are high quality: precise samples on few modes. (Few modes with hq ~ 0 is a generator
    # that has not found the data yet: the stall rule and the scheduler judge that, not this one.)
    min_mode_fraction: float = 0.25
    mode_collapse_hq: float = 0.1
    # all data: mean pairwise (feature) distance of fakes below this fraction of the real one
    min_diversity: float = 0.2
    warmup_steps: int = 500  # mode and diversity rules only apply after this many steps
    # primary metric not improved by `stall_min_delta` (relative) for this many evaluations
    stall_patience: int = 20  # 0 disables
    stall_min_delta: float = 0.01

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> CollapseRules:
        values = dict(values or {})
        known = {f.name: f for f in fields(cls)}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"collapse.{key}", value, f"one of {', '.join(known)}")
            kind = int if known[key].type == "int" else float
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
                    kind is int and not isinstance(value, int)) or not math.isfinite(value):
                raise ConfigError(f"collapse.{key}", value, f"a finite {kind.__name__} >= 0")
        for key in ("min_mode_fraction", "mode_collapse_hq", "min_diversity", "saturation_d_fake"):
            if values.get(key, 0) > 1:
                raise ConfigError(f"collapse.{key}", values[key], "a number in [0, 1]")
        return cls(**values)


def _finite(value: Any) -> bool:
    return not isinstance(value, (int, float)) or math.isfinite(value)


class CollapseDetector:
    """``update(metrics) -> (status, reason)`` at every evaluation.

    ``primary`` / ``mode`` name the metric the run optimises (for the stall rule);
    ``n_modes`` is the mixture's number of modes (None for other data)."""

    def __init__(self, rules: CollapseRules, primary: str, mode: str = "min", n_modes: int | None = None):
        self.rules, self.primary, self.mode, self.n_modes = rules, primary, mode, n_modes
        self.history: list[dict[str, Any]] = []
        self.status, self.reason = OK, ""
        self._best: float | None = None
        self._since_best = 0
        self._saturated_for = 0

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
                "since_best": self._since_best, "saturated_for": self._saturated_for}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])
        self.status, self.reason = state["status"], state["reason"]
        self._best, self._since_best = state["best"], state["since_best"]
        self._saturated_for = state["saturated_for"]

    # -- the rules, in order of severity ------------------------------------------------------
    def _check(self, m: dict[str, Any], params_finite: bool) -> tuple[str, str] | None:
        r = self.rules
        bad = sorted(k for k, v in m.items() if not _finite(v))
        if bad:
            return DIVERGED, f"non-finite {', '.join(bad)} at step {m.get('step')}"
        if not params_finite:
            return DIVERGED, f"non-finite network parameters at step {m.get('step')}"
        for name in ("w_critic", "grad_norm_d", "grad_norm_g") if r.blowup_window else ():  # 0 disables
            recent = [abs(h[name]) for h in self.history[-r.blowup_window:] if name in h]
            if name in m and len(recent) >= min(3, r.blowup_window):
                reference = max(statistics.median(recent), r.blowup_floor)
                if abs(m[name]) > r.blowup_factor * reference:
                    return DIVERGED, (f"{name} = {m[name]:.4g} at step {m['step']} is over {r.blowup_factor:g}x "
                                      f"its recent median {reference:.4g}")
        if "d_fake" in m and "loss_d" in m:
            saturated = m["loss_d"] < r.saturation_loss_d and m["d_fake"] < r.saturation_d_fake
            self._saturated_for = self._saturated_for + 1 if saturated else 0
            if self._saturated_for >= r.saturation_patience:
                return COLLAPSED, (f"discriminator saturated for {self._saturated_for} evaluations (loss_d = "
                                   f"{m['loss_d']:.3g}, D(G(z)) = {m['d_fake']:.3g}): the generator's gradient "
                                   f"vanishes")
        past_warmup = m.get("step", 0) >= r.warmup_steps
        if (past_warmup and self.n_modes and "modes" in m and m["modes"] <= r.min_mode_fraction * self.n_modes
                and m.get("hq", 1.0) >= r.mode_collapse_hq):
            return COLLAPSED, (f"mode collapse: {m['modes']:g} of {self.n_modes} modes covered by the "
                               f"{m.get('hq', 1.0):.0%} high-quality samples at step {m['step']} (limit "
                               f"{r.min_mode_fraction:g} x {self.n_modes})")
        if past_warmup and "diversity" in m and m["diversity"] < r.min_diversity:
            return COLLAPSED, (f"sample diversity {m['diversity']:.3g} of the real data's at step {m['step']} "
                               f"(limit {r.min_diversity:g})")
        return self._check_stall(m)

    def _check_stall(self, m: dict[str, Any]) -> tuple[str, str] | None:
        value = m.get(self.primary)
        if value is None or self.rules.stall_patience == 0:
            return None
        score = value if self.mode == "min" else -value
        if self._best is None or score < self._best - self.rules.stall_min_delta * abs(self._best):
            self._best, self._since_best = score, 0
            return None
        self._since_best += 1
        if self._since_best >= self.rules.stall_patience:
            best = self._best if self.mode == "min" else -self._best
            return COLLAPSED, (f"stalled: {self.primary} has not improved on {best:.4g} for "
                               f"{self._since_best} evaluations")
        return None
