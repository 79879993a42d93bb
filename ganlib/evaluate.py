"""Metrics of a trainer at an evaluation: computed on fixed evaluation noise and on the
dataset's held-out set, never on training batches.

Every evaluation reports, where they apply:

* ``w_critic`` (WGAN families): E f(x) - E f(G(z)) with x from the HELD-OUT set;
  ``d_real`` / ``d_fake`` (GAN): the discriminator's mean probabilities;
* ``w1`` (2-D data): exact W1 by optimal transport against a fixed held-out subset;
* ``swd``: sliced W1 against a fixed held-out subset (any dimension);
* ``fid`` in the feature space of ``feature_extractor`` (identity for vector data), and for
  images ``kid`` in the same features;
* ``diversity``: mean pairwise feature distance of the fakes over the real one's;
* ``modes`` / ``hq`` / ``rkl`` (mixtures);
* ``w_critic_corr``: Spearman correlation of ``w_critic`` with ``w1`` (``swd`` where there is
  no ``w1``) over the run's evaluations so far: how well the critic tracks the distance.

Then the collapse detector's verdict (``status``, ``reason``) and the sweep ``objective``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .collapse import OK, CollapseDetector, CollapseRules
from .metrics.diversity import mean_pairwise_distance
from .metrics.features import cache_dir, feature_extractor_for
from .metrics.fid import DEFAULT_CACHE, FeatureStats, extract_features, fid_kid_of_features
from .metrics.modes import mode_stats
from .metrics.wasserstein import ConvergenceError, critic_outputs, rank_correlation, swd, w1_exact, w_critic
from .trainer import Trainer

# A collapsed or diverged trial reports this as its objective: finite, so Optuna's sampler
# learns to avoid the region (a NaN result is dropped by Tune's OptunaSearch), and worse than
# any healthy score of the primary metrics (w1 / swd / fid are far below it on our data).
PENALTY = 1e3
SWD_PROJECTIONS = 64
KID_SUBSETS, KID_SUBSET_SIZE = 50, 1000
DIVERSITY_SAMPLES = 1000
# Exact OT costs ~O(n^2 log n) time and n^2 memory: 0.08 s at 1,024 points, 0.34 s at 2,048 on
# 2 cores (bench/eval_cost.py). Beyond this many points w1 uses the first W1_MAX_POINTS fakes.
W1_MAX_POINTS = 2048
W1_MAX_ITER = 1_000_000
_DISK_CACHES: dict[str, FeatureStats] = {}


def _real_stats_cache(extractor) -> FeatureStats:
    """Real statistics of the costly extractor (Inception) are also kept on disk, shared by the
    trials of a machine; identity / small-CNN features are recomputed once per process."""
    if not extractor.name.startswith("inception"):
        return DEFAULT_CACHE
    folder = str(cache_dir() / "stats")
    return _DISK_CACHES.setdefault(folder, FeatureStats(folder))


def primary_metric(data) -> tuple[str, str]:
    """(name, mode) of the metric a sweep optimises for this data: ``fid`` for images, exact
    ``w1`` for 2-D data, ``swd`` for other vectors. All are distances: lower is better."""
    if data.kind == "image":
        return "fid", "min"
    return ("w1", "min") if data.sample_shape == (2,) else ("swd", "min")


class Evaluator:
    """Built once per run: the feature extractor and the real data's statistics are computed
    once (per process: the statistics are cached by dataset, extractor and sample count)."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.data = data = trainer.data
        self.primary, self.mode = primary_metric(data)
        extractor = feature_extractor_for(data.name, data.kind, inception_path=trainer.cfg.inception_weights)
        self.extractor = extractor.to(trainer.device)
        self.feature_extractor = extractor.name  # logged as a tag: scores of other extractors don't compare
        self.real = _real_stats_cache(extractor).get(f"{data.name}/heldout", data.heldout, self.extractor)
        self.real_diversity = mean_pairwise_distance(self.real.features, DIVERSITY_SAMPLES)
        # Distances against a FIXED real subset of the size of the fake set: the small-sample
        # bias of an empirical W1 depends on that size only, and eval_samples is fixed for a sweep.
        n = trainer.cfg.eval_samples
        self.swd_real = data.heldout[:n]
        self.w1_real = data.heldout[:min(n, W1_MAX_POINTS)] if data.sample_shape == (2,) else None
        self.corr_reference = "w1" if self.w1_real is not None else "swd"
        self.w_pairs: list[tuple[float, float]] = []  # (w_critic, reference) per evaluation
        n_modes = None if data.centers is None else len(data.centers)
        self.detector = CollapseDetector(CollapseRules.from_dict(trainer.cfg.collapse), self.primary, self.mode,
                                         n_modes)

    # -- the metrics ----------------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        trainer, data = self.trainer, self.data
        fake = trainer.sample(trainer.cfg.eval_samples)
        metrics = self._critic_metrics(fake)
        if data.centers is not None:
            metrics.update(mode_stats(fake, data.centers, data.std))
        if self.w1_real is not None:
            n = min(len(fake), len(self.w1_real))
            metrics["w1"] = self._w1(fake[:n], self.w1_real[:n])
        metrics["swd"] = swd(fake, self.swd_real, n_projections=SWD_PROJECTIONS, seed=0)
        metrics.update(self._feature_metrics(fake))
        if "w_critic" in metrics:
            self.w_pairs.append((metrics["w_critic"], metrics[self.corr_reference]))
            corr = rank_correlation(*zip(*self.w_pairs, strict=True))
            if math.isfinite(corr):  # undefined before 3 evaluations: absent, not NaN (NaN means diverged)
                metrics["w_critic_corr"] = corr
        return metrics

    @staticmethod
    def _w1(fake: torch.Tensor, real: torch.Tensor) -> float:
        try:
            return w1_exact(fake, real, max_iter=W1_MAX_ITER)
        except ConvergenceError:  # rare degenerate point clouds: one more try, then the error stands
            return w1_exact(fake, real, max_iter=20 * W1_MAX_ITER)

    def _feature_metrics(self, fake: torch.Tensor) -> dict[str, float]:
        features = extract_features(self.extractor, fake)
        # KID's cubic kernel is made for normalised network features; on raw 2-D points its value
        # follows the data's scale, and it would cost more than the rest together: images only.
        out = fid_kid_of_features(self.real, features, with_kid=self.data.kind == "image", kid_subsets=KID_SUBSETS,
                                  kid_subset_size=KID_SUBSET_SIZE, seed=0)
        if math.isfinite(out["fid"]):
            out["diversity"] = mean_pairwise_distance(features, DIVERSITY_SAMPLES) / self.real_diversity
        return out

    def _critic_metrics(self, fake: torch.Tensor) -> dict[str, float]:
        """WGAN families: the critic's W1 estimate on HELD-OUT real data. GAN: the
        discriminator's mean probabilities, which the saturation rule watches."""
        critic, heldout = self.trainer.critic, self.data.heldout
        if self.trainer.cfg.is_wasserstein:
            return {"w_critic": w_critic(critic, heldout, fake)}
        real_out, fake_out = critic_outputs(critic, heldout, fake)
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
        metrics.update(status=status, reason=reason, objective=objective)
        # Tune's progress table shows the first four numeric entries: make them the telling ones.
        lead = ["step", "objective", self.primary, *(k for k in ("modes", "diversity", "w_critic", "d_fake")
                                                     if k in metrics)][:4]
        return {**{k: metrics[k] for k in lead if k in metrics}, **metrics}

    # -- checkpoints: a resumed run continues its correlation and its collapse rules ------------
    def state_dict(self) -> dict[str, Any]:
        return {"w_pairs": [list(p) for p in self.w_pairs], "detector": self.detector.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w_pairs = [(float(a), float(b)) for a, b in state["w_pairs"]]
        self.detector.load_state_dict(state["detector"])
