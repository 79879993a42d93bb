"""Metrics of a trainer at an evaluation, computed on fixed evaluation noise and on the
dataset's held-out set (never on training batches), the collapse verdict, and the run's score.

Every evaluation reports, where they apply:

* the critic's reading of held-out data and fakes, by loss: ``w_critic`` (Wasserstein),
  ``d_real`` / ``d_fake`` (the GAN losses: probabilities; least squares: raw scores);
* ``swd``: sliced W1 against a fixed held-out subset (any dimension);
* ``fid`` in the feature space of ``feature_extractor`` (identity for vector data);
* ``diversity``: mean pairwise feature distance of the fakes over the real one's;
* ``modes`` / ``hq`` / ``rkl`` (mixtures);
* ``w_critic_corr``: Spearman correlation of ``w_critic`` with ``w1`` (``swd`` where there is
  no ``w1``) over the run's scored evaluations so far: how well the critic tracks the distance.

A **scored** evaluation (every ``score_every`` steps, at every ``checkpoint_steps`` step and at
the last step) adds the costly ones: ``w1`` (exact optimal transport, 2-D data) and ``kid``
(images); the primary metric (``w1``, ``fid`` or ``swd``) is read there and the run's score
updated:

* ``score``: the mean primary metric over the last ``score_window`` scored evaluations (one
  lucky evaluation does not make a run);
* ``objective``: the best score so far, what schedulers and the searcher compare; a collapsed
  or diverged run reports ``penalty`` instead, which is worse than any healthy score: 10x the
  divergence ceiling (``CollapseRules.ceiling_factor`` x ``baseline``, the primary metric of a
  generator that puts every sample at the data mean), above which no run counts as healthy.

Then the collapse detector's verdict: ``status`` (ok, stalled, collapsed, diverged) and ``reason``.

An evaluation is taken in two halves: ``measure`` (the samples and every metric, at the step)
and ``conclude`` (the score, the verdict, the objective). With ``eval_overlap`` the metrics are
computed on the evaluator's thread, on copies of the generator and critic taken at the step,
while the training loop goes on (torch's kernels and POT's exact OT release the GIL);
``conclude`` then waits for them. Nothing else changes: the copies are the networks of that
step (the best-score weights are taken from the generator's), the metrics draw on no random
stream training uses, and verdicts are reached on the same metrics in the same order, so a
run's results are those of a run without the overlap.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from .collapse import FAILED, CollapseDetector
from .metrics.diversity import mean_pairwise_distance
from .metrics.features import cache_dir, feature_extractor_for
from .metrics.fid import DEFAULT_CACHE, FeatureStats, extract_features, fid, kid
from .metrics.modes import mode_stats
from .metrics.wasserstein import ConvergenceError, SlicedW1, critic_outputs, rank_correlation, w1_exact
from .models import evaluation_copy
from .trainer import GENERATOR_KEYS, CheckpointError, Trainer, load_checkpoint

SWD_PROJECTIONS = 64
KID_SUBSETS, KID_SUBSET_SIZE = 50, 1000
DIVERSITY_SAMPLES = 1000
# Exact OT costs ~O(n^2 log n) time and n^2 memory: 0.08 s at 1,024 points, 0.34 s at 2,048 on
# 2 cores (bench/eval_cost.py). Beyond this many points w1 uses the first W1_MAX_POINTS fakes.
W1_MAX_POINTS = 2048
W1_MAX_ITER = 1_000_000
# The final evaluation of a confirmation run: its own noise (not the samples the search compared
# runs on), and exact OT on at most this many points (about 1-4 s at 4,096 here).
FINAL_NOISE_SEED = 1_234_567_891
W1_FINAL_MAX_POINTS = 4096
PENALTY_FACTOR = 10.0  # a failed run's objective: this many times the divergence ceiling
_DISK_CACHES: dict[str, FeatureStats] = {}
# Feature extractors on their device, one per process: a cohort's K members (and the trials of a
# reused actor) share one copy, not K (Inception is ~100 MB of weights, read and hashed per load).
# Shared across evaluation threads: extractors run in eval mode, without state to change.
_EXTRACTORS: dict[tuple[str, str, str | None, str], Any] = {}
# Extractors the sweep's driver handed this process (tune.trainable): a worker node may lack the
# LeNet or Inception file the driver's pre-flight found, or hold other weights under its name.
_SHIPPED: dict[tuple[str, str, str | None], Any] = {}
_BASELINES: dict[tuple, float] = {}  # (dataset, extractor, n) -> the constant generator's primary metric


def use_extractor(data, inception_weights: str | None, extractor) -> None:
    """Evaluators of ``data`` in this process use ``extractor`` instead of loading their own."""
    _SHIPPED[(data.name, data.kind, inception_weights)] = extractor


@dataclass
class Measured:
    """One evaluation's metrics before its verdict (``Evaluator.measure``)."""

    step: int
    scored: bool
    metrics: dict[str, Any]
    params_finite: bool
    pending: Future | None = None  # the evaluation metrics, computing on the evaluator's thread
    networks: tuple[torch.nn.Module, torch.nn.Module] | None = None  # copies at ``step`` (generator, critic)

    def ready(self) -> bool:
        return self.pending is None or self.pending.done()


def _cpu_copy(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in network.state_dict().items()}


def overlaps(setting: str, device: torch.device) -> bool:
    """``eval_overlap`` resolved: ``auto`` overlaps on CUDA, where the CPU waits on the GPU anyway;
    a CPU trial would take the evaluation's core from its own (or another trial's) training."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def _real_stats_cache(extractor) -> FeatureStats:
    """Real statistics of the costly extractor (Inception) are also kept on disk, shared by the
    trials of a machine; identity / small-CNN features are recomputed once per process."""
    if not extractor.name.startswith("inception"):
        return DEFAULT_CACHE
    folder = str(cache_dir() / "stats")
    return _DISK_CACHES.setdefault(folder, FeatureStats(folder))


def primary_metric(data) -> str:
    """The metric a run is scored on for this data: ``fid`` for images, exact ``w1`` for 2-D
    data, ``swd`` for other vectors. All are distances: lower is better."""
    if data.kind == "image":
        return "fid"
    return "w1" if data.sample_shape == (2,) else "swd"


class Evaluator:
    """Built once per run: the feature extractor, the real data's statistics and the baseline
    are computed once (per process: they are cached by dataset, extractor and sample count)."""

    def __init__(self, trainer: Trainer, executor: ThreadPoolExecutor | None = None):
        """``executor``: where overlapped evaluations compute (a cohort's members share one, sized
        to the trial's CPUs); by default the evaluator's own thread, started when first needed."""
        self.trainer = trainer
        self.data = data = trainer.data
        cfg = trainer.cfg
        self.primary = primary_metric(data)
        key = (data.name, data.kind, cfg.inception_weights, str(trainer.device))
        if key not in _EXTRACTORS:
            shipped = _SHIPPED.get(key[:3])  # copied: .to() moves a module in place, and it is the caller's
            extractor = copy.deepcopy(shipped) if shipped is not None else \
                feature_extractor_for(data.name, data.kind, inception_path=cfg.inception_weights)
            _EXTRACTORS[key] = extractor.to(trainer.device)
        self.extractor = extractor = _EXTRACTORS[key]
        self.feature_extractor = extractor.name  # logged as a tag: scores of other extractors don't compare
        self.real = _real_stats_cache(extractor).get(f"{data.name}/heldout", data.heldout, self.extractor)
        self.real_diversity = mean_pairwise_distance(self.real.features, DIVERSITY_SAMPLES)
        # Distances against a FIXED real subset of the size of the fake set: the small-sample
        # bias of an empirical W1 depends on that size only, and eval_samples is fixed for a sweep.
        n = cfg.eval_samples
        self.swd = SlicedW1(data.heldout[:n], n_projections=SWD_PROJECTIONS, seed=0)
        self.w1_real = data.heldout[:min(n, W1_MAX_POINTS)] if data.sample_shape == (2,) else None
        self.corr_reference = "w1" if self.w1_real is not None else "swd"
        self.w_pairs: list[tuple[float, float]] = []  # (w_critic, reference) per scored evaluation
        self.primary_history: list[float] = []  # the primary metric at each scored evaluation
        self.score = math.nan  # the score at the last scored evaluation
        self.best: dict[str, Any] | None = None  # {"step", "score", "generator"} at the best score
        self.baseline = self._baseline()
        rules = cfg.rules
        self.penalty = PENALTY_FACTOR * rules.ceiling_factor * self.baseline
        n_modes = None if data.centers is None else len(data.centers)
        self.detector = CollapseDetector(rules, self.primary, self.baseline, n_modes, trainer.loss.saturates,
                                         eval_every=cfg.eval_every)
        self.overlap = overlaps(cfg.eval_overlap, trainer.device)
        self._thread = executor  # None: started by the first measure that overlaps
        self._owns_thread = executor is None

    def close(self) -> None:
        """Ends the evaluator's own thread (a pending evaluation is abandoned, never concluded);
        a shared executor is its owner's to end."""
        if self._thread is not None and self._owns_thread:
            self._thread.shutdown(wait=False, cancel_futures=True)

    # -- the metrics ----------------------------------------------------------------------------
    def metrics(self, scored: bool = True, networks: tuple[torch.nn.Module, torch.nn.Module] | None = None
                ) -> dict[str, float]:
        """Every metric of one evaluation; ``scored`` adds the costly ones (``w1``, ``kid``).
        Of ``networks`` (generator, critic): the trainer's own unless given."""
        generator, critic = networks or (self.trainer.generator, self.trainer.critic)
        fake = self.trainer.sample(self.trainer.cfg.eval_samples, generator=generator)
        return self._metrics_of(fake, scored, critic)

    def _metrics_of(self, fake: torch.Tensor, scored: bool, critic: torch.nn.Module | None) -> dict[str, float]:
        data = self.data
        metrics = self._critic_metrics(critic, fake) if critic is not None else {}
        if data.centers is not None:
            metrics.update(mode_stats(fake, data.centers, data.std))
        if scored and self.w1_real is not None:
            n = min(len(fake), len(self.w1_real))
            metrics["w1"] = self._w1(fake[:n], self.w1_real[:n])
        metrics["swd"] = self.swd(fake)
        features = extract_features(self.extractor, fake)
        metrics["fid"] = fid(features, self.real)
        if math.isfinite(metrics["fid"]):
            metrics["diversity"] = mean_pairwise_distance(features, DIVERSITY_SAMPLES) / self.real_diversity
        # KID's cubic kernel is made for normalised network features; on raw 2-D points its value
        # follows the data's scale, and it would cost more than the rest together: images only.
        if scored and data.kind == "image":
            metrics["kid"] = kid(self.real.features, features, KID_SUBSETS, KID_SUBSET_SIZE, seed=0)
        return metrics

    def _baseline(self) -> float:
        """The primary metric of the best constant generator: every sample at the data mean."""
        cfg, data = self.trainer.cfg, self.data
        key = (data.name, self.feature_extractor, cfg.eval_samples)
        if key not in _BASELINES:
            constant = data.heldout.mean(0, keepdim=True).expand(cfg.eval_samples, *data.sample_shape)
            _BASELINES[key] = self._metrics_of(constant.contiguous(), scored=True, critic=None)[self.primary]
        return _BASELINES[key]

    @staticmethod
    def _w1(fake: torch.Tensor, real: torch.Tensor) -> float:
        try:
            return w1_exact(fake, real, max_iter=W1_MAX_ITER)
        except ConvergenceError:  # rare degenerate point clouds: one more try, then the error stands
            return w1_exact(fake, real, max_iter=20 * W1_MAX_ITER)

    def _critic_metrics(self, critic: torch.nn.Module, fake: torch.Tensor) -> dict[str, float]:
        """The critic's outputs on HELD-OUT real data and on the fakes, read as the loss reads them."""
        # on the same fixed held-out subset as the distances (eval_samples points, not the whole set)
        critic = evaluation_copy(critic, self.trainer.device)
        real_out, fake_out = critic_outputs(critic, self.data.heldout[: len(fake)], fake)
        return self.trainer.loss.describe(real_out, fake_out)

    def is_scored(self, step: int) -> bool:
        """Scored evaluations: the first, every ``score_every`` steps, the scheduler's
        ``checkpoint_steps`` and the last step (so every result carries a defined objective)."""
        cfg = self.trainer.cfg
        return (not self.primary_history or step % cfg.score_every == 0 or step in cfg.checkpoint_steps
                or step >= cfg.steps)

    def __call__(self, train_metrics: dict[str, float], scored: bool | None = None) -> dict[str, float | str]:
        """Evaluation metrics merged with ``train_metrics`` (which hold ``step``), plus the
        ``score``, the verdict (``status``, ``reason``) and the ``objective``. Between scored
        evaluations the score and objective are those of the last scored one. All in this thread."""
        return self.conclude(self.measure(train_metrics, scored, overlap=False))

    def measure(self, train_metrics: dict[str, float], scored: bool | None = None, overlap: bool = True) -> Measured:
        """The first half of an evaluation, at the trainer's current step: samples and metrics.
        Where the run overlaps evaluations (and ``overlap``), the metrics are started on the
        evaluator's thread, on copies of the networks, and not waited for."""
        step = int(train_metrics["step"])
        scored = self.is_scored(step) if scored is None else scored
        params_finite = all(bool(torch.isfinite(p).all()) for p in self.trainer.generator.parameters())
        if not (overlap and self.overlap):
            return Measured(step, scored, {**train_metrics, **self.metrics(scored)}, params_finite)
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="evaluation")
        networks = (copy.deepcopy(self.trainer.generator), copy.deepcopy(self.trainer.critic))
        return Measured(step, scored, dict(train_metrics), params_finite,
                        pending=self._thread.submit(self.metrics, scored, networks), networks=networks)

    def conclude(self, measured: Measured) -> dict[str, float | str]:
        """The second half: waits for metrics still computing, then the score, the verdict and
        the objective."""
        step, scored, metrics = measured.step, measured.scored, measured.metrics
        if measured.pending is not None:
            metrics.update(measured.pending.result())
        window = self.trainer.cfg.score_window
        if scored:
            self.primary_history.append(metrics[self.primary])
            recent = self.primary_history[-window:]
            self.score = sum(recent) / len(recent)
            if "w_critic" in metrics:
                self.w_pairs.append((metrics["w_critic"], metrics[self.corr_reference]))
                corr = rank_correlation(*zip(*self.w_pairs, strict=True))
                if math.isfinite(corr):  # undefined before 3 evaluations: absent, not NaN (NaN means diverged)
                    metrics["w_critic_corr"] = corr
        if scored or self.primary_history:
            metrics["score"] = self.score
        status, reason = self.detector.update(metrics, measured.params_finite)
        if status in FAILED:
            metrics["score"] = metrics["objective"] = self.penalty
        else:
            if scored and (self.best is None or self.score < self.best["score"]):
                generator = self.trainer.generator if measured.networks is None else measured.networks[0]
                self.best = {"step": step, "score": self.score, "generator": _cpu_copy(generator)}
            metrics["objective"] = self.best["score"]
            metrics["best_step"] = self.best["step"]
        metrics.update(status=status, reason=reason, scored=scored)
        # Tune's progress table shows the first four numeric entries: make them the telling ones.
        lead = ["step", "objective", self.primary, *(k for k in ("modes", "diversity", "w_critic", "d_fake")
                                                     if k in metrics)][:4]
        return {**{k: metrics[k] for k in lead if k in metrics}, **metrics}

    def final_metrics(self, n: int) -> dict[str, float]:
        """Every metric on ``n`` fresh samples from noise the run never evaluated on, against the
        whole held-out set (exact W1 on at most ``W1_FINAL_MAX_POINTS`` points a side), prefixed
        ``final_``: the headline numbers of a confirmation run."""
        from .metrics.wasserstein import swd

        trainer, data = self.trainer, self.data
        fake = trainer.sample(n, seed=FINAL_NOISE_SEED)
        out = {"final_samples": float(n)}
        if data.centers is not None:
            out.update(mode_stats(fake, data.centers, data.std))
        if self.w1_real is not None:
            m = min(n, len(data.heldout), W1_FINAL_MAX_POINTS)
            out["w1"] = self._w1(fake[:m], data.heldout[:m])
            out["w1_points"] = float(m)
        out["swd"] = swd(fake, data.heldout, n_projections=SWD_PROJECTIONS, seed=0)
        features = extract_features(self.extractor, fake)
        out["fid"] = fid(features, self.real)
        if math.isfinite(out["fid"]):
            out["diversity"] = mean_pairwise_distance(features, DIVERSITY_SAMPLES) / self.real_diversity
        if data.kind == "image":
            out["kid"] = kid(self.real.features, features, KID_SUBSETS, KID_SUBSET_SIZE, seed=0)
        return {k if k.startswith("final_") else f"final_{k}": v for k, v in out.items()}


    # -- checkpoints: a resumed run continues its score, its correlation and its rules ---------
    def state_dict(self) -> dict[str, Any]:
        return {"w_pairs": [list(p) for p in self.w_pairs], "primary_history": list(self.primary_history),
                "best": self.best, "detector": self.detector.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w_pairs = [(float(a), float(b)) for a, b in state["w_pairs"]]
        self.primary_history = [float(v) for v in state.get("primary_history", [])]
        recent = self.primary_history[-self.trainer.cfg.score_window:]
        self.score = sum(recent) / len(recent) if recent else math.nan
        self.best = state.get("best")
        self.detector.load_state_dict(state["detector"])


# -- command line: re-score a saved generator offline ----------------------------------------------
def evaluate_checkpoint(state: dict[str, Any], eval_samples: int | None = None, which: str = "last",
                        device: str = "cpu") -> dict[str, Any]:
    """Every metric of a checkpoint's generator (``which``: its last weights, or ``best``, those of
    its best score), on ``eval_samples`` generated samples (default: the run's own) against the
    same held-out set a sweep uses."""
    from .config import normalize_saved_config

    config = {k: v for k, v in normalize_saved_config(state["config"]).items() if v is not None}
    config.update(device=device, **({"eval_samples": eval_samples} if eval_samples else {}))
    trainer = Trainer(config)
    generator = state["generator"]
    if which == "best":
        best = (state.get("evaluation") or {}).get("best")
        if not best:
            raise ValueError("this checkpoint holds no best-score weights (written before any scored evaluation)")
        generator = best["generator"]
    trainer.generator.load_state_dict(generator)
    evaluator = Evaluator(trainer)
    metrics = evaluator._metrics_of(trainer.sample(trainer.cfg.eval_samples), scored=True, critic=None)
    return {"step": int(state["step"]), "weights": which, "eval_samples": trainer.cfg.eval_samples,
            "primary": evaluator.primary, "feature_extractor": evaluator.feature_extractor,
            "baseline": evaluator.baseline, **metrics}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ganlib.evaluate",
                                     description="Re-score a saved generator (a checkpoint.pt or generator.pt).")
    parser.add_argument("checkpoint", help="a checkpoint written by a run or a sweep")
    parser.add_argument("--eval-samples", type=int, help="generated samples (default: the run's eval_samples)")
    parser.add_argument("--weights", choices=("last", "best"), default="last",
                        help="the last weights, or those of the run's best score")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.eval_samples is not None and args.eval_samples < 2:
        parser.error(f"--eval-samples = {args.eval_samples} is invalid: allowed an integer >= 2")
    try:
        state = load_checkpoint(args.checkpoint, keys=GENERATOR_KEYS)
        result = evaluate_checkpoint(state, args.eval_samples, args.weights, args.device)
    except (CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
