"""Where a scheduler's rungs fall: the step arithmetic of ASHA and asynchronous Hyperband, without
Ray, so what needs only the steps (the evaluation benchmarks, on a machine without Ray) gets them
as a sweep would (``plan.plan_sweep`` builds the schedulers on them).
"""

from __future__ import annotations

import math

import numpy as np

# bench/search_efficiency.py chose both: rungs at 1/20 and 8/20 of the budget (100 and 800 steps
# in the default preset) reach random search's best with a third of its work (before: 1 / 4 and
# reduction 2, then reduction 5)
ASHA_REDUCTION, HYPERBAND_REDUCTION = 8, 3
ASHA_FIRST_RUNG = 1 / 20  # of the budget


def aligned(step: float, unit: int) -> int:
    """``step`` rounded up to a multiple of ``unit`` (evaluations only happen there)."""
    return max(unit, int(math.ceil(step / unit)) * unit)


def asha_rungs(grace: int, max_t: int, reduction: int, bracket: int = 0) -> list[int]:
    """The milestones of one ASHA bracket, as ``ray.tune.schedulers.async_hyperband._Bracket``
    computes them (its MAX_RUNGS formula), below ``max_t``."""
    count = int(np.log(max_t / grace) / np.log(reduction) - bracket + 1)
    return sorted(r for k in range(count) if (r := grace * reduction ** (k + bracket)) < max_t)


def asha_first_rung(steps: int, eval_every: int, first_rung: int | None = None) -> int:
    """ASHA's grace period: ``first_rung`` if the user set one, else a twentieth of the budget
    rounded up to an evaluation."""
    return first_rung or aligned(steps * ASHA_FIRST_RUNG, eval_every)
