"""A cohort's training run: ``train`` for K members at once.

The members train as one stack (``cohort.CohortTrainer``) and are evaluated one by one, each by
its own ``Evaluator`` on its own networks, at the cadence they share: each member's metrics,
score, collapse rules and best-score weights are those its solo run would have. A member stops
as a solo run would (its collapse / stall verdict, under ``stop_on_collapse``) or when
``decide`` says so (a scheduler's rung); a stopped member leaves the stack and costs nothing
more. The run ends when its last member stops or reaches the budget.

An exception raised while evaluating one member (its metrics, its final evaluation) ends that
member alone, with status ``error`` and the exception as its reason, as the same error would end
its solo trial; the others train on. An exception in the stacked step is every live member's: it
propagates, and the trial errors.

At each evaluation the reporter gets every member's latest metrics (``ended`` True for a member
that has stopped or reached the budget; a stopped member's are those it stopped with) and, when
a checkpoint is due, the state of the whole cohort (``cohort_checkpoint``). Stops are decided
before the checkpoint is taken, so a cohort restored from it never runs a stopped member again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .cohort import MEMBER_ERROR, CohortTrainer
from .collapse import OK
from .config import GanConfig
from .data import Dataset
from .evaluate import Evaluator
from .train import SAMPLES_IN_CHECKPOINT, _RunningMeans
from .trainer import Throughput

# report({member: metrics}, checkpoint_state_or_None)
CohortReporter = Callable[[dict[int, dict[str, Any]], dict[str, Any] | None], None]
# decide({member: metrics of this evaluation}) -> the members to stop now
Decider = Callable[[dict[int, dict[str, Any]]], Iterable[int] | None]


def train_cohort(configs: list[GanConfig | dict[str, Any]], report: CohortReporter,
                 resume: dict[str, Any] | None = None, data: Dataset | None = None,
                 decide: Decider | None = None) -> CohortTrainer:
    """Run every member to ``steps`` generator iterations, or until it stops (from ``resume``'s
    state if given: a ``cohort_checkpoint``)."""
    cohort = CohortTrainer(configs, data)
    evaluators = [Evaluator(t) for t in cohort.solos]
    latest: dict[int, dict[str, Any]] = {}  # member -> its latest metrics (a stopped member's last)
    stopped_samples: dict[int, Any] = {}  # stopped member -> the samples it stopped with (for its picture)
    if resume is not None:
        cohort.load_state_dict(resume["cohort"])
        for evaluate, state in zip(evaluators, resume["evaluation"], strict=True):
            evaluate.load_state_dict(state)
        latest = {int(k): dict(v) for k, v in resume.get("latest", {}).items()}
        stopped_samples = {int(k): v for k, v in resume.get("samples", {}).items() if int(k) in cohort.retired}
    cfg = cohort.cfg0  # what members share: budget, cadence, checkpoints
    means = {k: _RunningMeans() for k in cohort.active}
    throughput = {k: Throughput(cohort.solos[k]) for k in cohort.active}
    while cohort.active and cohort.step < cfg.steps:
        stats = cohort.train_step()
        for i, k in enumerate(cohort.active):
            means[k].add({name: value[i] for name, value in stats.items()})
        step = cohort.step
        if step % cfg.eval_every and step != cfg.steps and step not in cfg.checkpoint_steps:
            continue
        results, ending = {}, set()
        for k in cohort.active:
            member = cohort.member_trainer(k)
            evaluate = evaluators[k]
            train_metrics = {"step": step, "critic_steps": member.critic_steps, **means[k].pop(),
                             "samples_per_s": throughput[k].rate(), "opt_lr_d": member.cfg.lr_d,
                             "opt_lr_g": member.cfg.lr_g}
            try:
                metrics = evaluate(train_metrics)
                stop = member.cfg.stop_on_collapse and metrics["status"] != OK
                if cfg.final_eval_samples and (stop or step == cfg.steps):
                    metrics.update(evaluate.final_metrics(cfg.final_eval_samples))
            except Exception as err:  # noqa: BLE001 - this member's failure, not its cohort's
                metrics, stop = member_error(train_metrics, err, evaluate.penalty), True
            results[k] = metrics
            if stop:
                ending.add(k)
        ok = {k: m for k, m in results.items() if k not in ending}
        ending |= {k for k in (decide(ok) or ()) if k in ok} if decide and ok else set()
        stopped_samples.update({k: cohort.member_trainer(k).sample(min(cfg.eval_samples, SAMPLES_IN_CHECKPOINT))
                                for k in ending})
        for k in sorted(ending):
            cohort.stop(k)
        for k, metrics in results.items():
            latest[k] = {**metrics, "ended": k in ending or step == cfg.steps}
        save = step % cfg.checkpoint_every == 0 or step == cfg.steps or step in cfg.checkpoint_steps or ending
        report(dict(latest), cohort_checkpoint(cohort, evaluators, latest, stopped_samples) if save else None)
        for k in cohort.active:
            throughput[k].reset()
    return cohort


def member_error(train_metrics: dict[str, Any], err: Exception, penalty: float) -> dict[str, Any]:
    """A member whose evaluation raised: its training statistics, status ``error``, the exception
    as its reason, and a failed run's objective (the searcher is told it failed)."""
    return {"step": train_metrics["step"], "objective": penalty, **train_metrics, "status": MEMBER_ERROR,
            "reason": f"evaluating this member raised {type(err).__name__}: {err}"[:1000]}


def cohort_checkpoint(cohort: CohortTrainer, evaluators: list[Evaluator], latest: dict[int, dict[str, Any]],
                      stopped_samples: dict[int, Any] | None = None) -> dict[str, Any]:
    """The whole cohort (``CohortTrainer.state_dict``), every member's evaluation state and
    latest metrics, and samples of the active members and of the stopped ones (as they stopped)."""
    n = min(cohort.cfg0.eval_samples, SAMPLES_IN_CHECKPOINT)
    samples = {str(k): cohort.member_trainer(k).sample(n) for k in cohort.active}
    samples.update({str(k): v for k, v in (stopped_samples or {}).items()})
    return {"cohort": cohort.state_dict(), "evaluation": [e.state_dict() for e in evaluators],
            "latest": {str(k): v for k, v in latest.items()}, "samples": samples}
