"""Metrics of a trainer at an evaluation: computed on fixed evaluation noise and on the
dataset's held-out set, never on training batches."""

from __future__ import annotations

import math

import torch

from .collapse import OK, CollapseDetector, CollapseRules
from .metrics.modes import mode_stats
from .trainer import Trainer

# A collapsed or diverged trial reports this as its objective: finite, so Optuna's sampler
# learns to avoid the region (a NaN result is dropped by Tune's OptunaSearch), and worse than
# any healthy score of the primary metrics (w1 / swd / fid are far below it on our data).
PENALTY = 1e3


def primary_metric(trainer: Trainer) -> tuple[str, str]:
    """(name, mode) of the metric a sweep optimises for this data."""
    if trainer.data.kind == "image":
        return "fid", "min"
    return ("w1", "min") if trainer.data.sample_shape == (2,) else ("swd", "min")


class Evaluator:
    """Built once per run, so anything expensive about the real data is computed once."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.data = trainer.data
        self.primary, self.mode = primary_metric(trainer)
        self.feature_extractor = "identity"  # names the feature space of fid / kid / diversity
        n_modes = None if self.data.centers is None else len(self.data.centers)
        self.detector = CollapseDetector(CollapseRules.from_dict(trainer.cfg.collapse), self.primary, self.mode,
                                         n_modes)

    def metrics(self) -> dict[str, float]:
        fake = self.trainer.sample(self.trainer.cfg.eval_samples)
        metrics = self._critic_metrics(fake)
        if self.data.centers is not None:
            metrics.update(mode_stats(fake, self.data.centers, self.data.std))
        return metrics

    @torch.no_grad()
    def _critic_metrics(self, fake: torch.Tensor) -> dict[str, float]:
        """WGAN families: the critic's estimate E f(x) - E f(G(z)) on HELD-OUT real data.
        GAN: the discriminator's mean probabilities, which the saturation rule watches."""
        trainer = self.trainer
        critic = trainer.critic
        was_training = critic.training
        critic.eval()
        try:
            real_out = critic(self.data.heldout.to(trainer.device)).double()
            fake_out = critic(fake.to(trainer.device)).double()
        finally:
            critic.train(was_training)
        if trainer.cfg.is_wasserstein:
            return {"w_critic": (real_out.mean() - fake_out.mean()).item()}
        return {"d_real": torch.sigmoid(real_out).mean().item(), "d_fake": torch.sigmoid(fake_out).mean().item()}

    def __call__(self, train_metrics: dict[str, float]) -> dict[str, float | str]:
        """Evaluation metrics merged with ``train_metrics``, plus the collapse verdict
        (``status``, ``reason``) and the sweep ``objective``."""
        metrics = {**train_metrics, **self.metrics()}
        params_finite = all(torch.isfinite(p).all() for p in self.trainer.generator.parameters())
        status, reason = self.detector.update(metrics, params_finite)
        value = metrics.get(self.primary)
        healthy = status == OK and value is not None and math.isfinite(value)
        objective = value if healthy else (PENALTY if self.mode == "min" else -PENALTY)
        return {**metrics, "status": status, "reason": reason, "objective": objective}
