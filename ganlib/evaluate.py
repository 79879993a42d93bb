"""Metrics of a trainer at an evaluation: computed on fixed evaluation noise and on the
dataset's held-out set, never on training batches."""

from __future__ import annotations

from .metrics.modes import mode_stats
from .trainer import Trainer


class Evaluator:
    """Built once per run, so anything expensive about the real data is computed once."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.data = trainer.data

    def __call__(self) -> dict[str, float]:
        fake = self.trainer.sample(self.trainer.cfg.eval_samples)
        metrics: dict[str, float] = {}
        if self.data.centers is not None:
            metrics.update(mode_stats(fake, self.data.centers, self.data.std))
        return metrics
