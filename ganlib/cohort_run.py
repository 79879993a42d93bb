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

With ``eval_overlap`` (``auto``: on CUDA) the members' metrics compute on one pool of threads, as
many as the trial's CPUs, on copies of their networks, while the stack trains on; the evaluation
is concluded when they are all in, at the next evaluation at the latest. A member it stops ends
with its networks and counters of the evaluation's step, and its checkpoint is the cohort of that
step (copied when it was measured) with the stopped members retired: what is reported, stopped
and saved is what the cohort without the overlap reports, stops and saves.

At each evaluation the reporter gets every member's latest metrics (``ended`` True for a member
that has stopped or reached the budget; a stopped member's are those it stopped with) and, when
a checkpoint is due, the state of the whole cohort (``cohort_checkpoint``). Stops are decided
before the checkpoint is taken, so a cohort restored from it never runs a stopped member again.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from .cohort import MEMBER_ERROR, CohortTrainer, MemberAt, without_members
from .collapse import OK
from .config import GanConfig
from .data import Dataset
from .evaluate import Evaluator, Measured, overlaps
from .train import SAMPLES_IN_CHECKPOINT, _RunningMeans
from .trainer import Throughput

# report({member: metrics}, checkpoint_state_or_None)
CohortReporter = Callable[[dict[int, dict[str, Any]], dict[str, Any] | None], None]
# decide({member: metrics of this evaluation}, members ending at it by their own verdict) -> the
# members to stop now. The ending ones are shown too: a scheduler records them, as Tune's ASHA
# records a trial its stopper ends (on_trial_complete).
Decider = Callable[[dict[int, dict[str, Any]], set[int]], Iterable[int] | None]


def train_cohort(configs: list[GanConfig | dict[str, Any]], report: CohortReporter,
                 resume: dict[str, Any] | None = None, data: Dataset | None = None,
                 decide: Decider | None = None) -> CohortTrainer:
    """Run every member to ``steps`` generator iterations, or until it stops (from ``resume``'s
    state if given: a ``cohort_checkpoint``)."""
    cohort = CohortTrainer(configs, data)
    cfg = cohort.cfg0  # what members share: budget, cadence, checkpoints, the evaluation overlap
    # Overlapped evaluations compute on one pool for all members, as wide as the trial's CPUs.
    pool = ThreadPoolExecutor(max(1, torch.get_num_threads()), thread_name_prefix="evaluation") \
        if overlaps(cfg.eval_overlap, cohort.device) else None
    evaluators = [Evaluator(t, pool) for t in cohort.solos]
    latest: dict[int, dict[str, Any]] = {}  # member -> its latest metrics (a stopped member's last)
    stopped_samples: dict[int, Any] = {}  # stopped member -> the samples it stopped with (for its picture)
    if resume is not None:
        cohort.load_state_dict(resume["cohort"])
        for evaluate, state in zip(evaluators, resume["evaluation"], strict=True):
            evaluate.load_state_dict(state)
        latest = {int(k): dict(v) for k, v in resume.get("latest", {}).items()}
        stopped_samples = {int(k): v for k, v in resume.get("samples", {}).items() if int(k) in cohort.retired}
    means = {k: _RunningMeans() for k in cohort.active}
    throughput = {k: Throughput(cohort.solos[k]) for k in cohort.active}

    def measure(step: int) -> CohortEvaluation:
        """Every active member's evaluation at ``step``, its metrics started (on the pool) or done."""
        evaluation = CohortEvaluation(step)
        for k in cohort.active:
            member = cohort.member_trainer(k)
            train_metrics = {"step": step, "critic_steps": member.critic_steps, **means[k].pop(),
                             "samples_per_s": throughput[k].rate(), "opt_lr_d": member.cfg.lr_d,
                             "opt_lr_g": member.cfg.lr_g}
            evaluation.train_metrics[k] = train_metrics
            try:
                measured = evaluation.measured[k] = evaluators[k].measure(train_metrics)
                networks = measured.networks
            except Exception as err:  # noqa: BLE001 - this member's failure, not its cohort's
                evaluation.measured[k] = err
                networks = (copy.deepcopy(member.generator), copy.deepcopy(member.critic)) if pool else None
            if networks is not None:  # the cohort may train on: keep the member as it is now
                evaluation.at[k] = MemberAt(member.step, member.critic_steps, member.real_samples_seen, *networks)
        return evaluation

    def conclude(evaluation: CohortEvaluation) -> None:
        """Verdicts, stops (a member stopped ends as it was at the evaluation), report, checkpoint."""
        step, results, ending = evaluation.step, {}, set()
        for k, measured in evaluation.measured.items():
            evaluate = evaluators[k]
            try:
                if isinstance(measured, Exception):
                    raise measured
                metrics = evaluate.conclude(measured)
                stop = cohort.solos[k].cfg.stop_on_collapse and metrics["status"] != OK
                if cfg.final_eval_samples and (stop or step == cfg.steps):
                    cohort.member_trainer(k, evaluation.at.get(k))  # the networks of the evaluation's step
                    metrics.update(evaluate.final_metrics(cfg.final_eval_samples))
            except Exception as err:  # noqa: BLE001 - this member's failure, not its cohort's
                metrics, stop = member_error(evaluation.train_metrics[k], err, evaluate.penalty), True
            results[k] = metrics
            if stop:
                ending.add(k)
        ok = {k: m for k, m in results.items() if k not in ending}
        scored = {k: m for k, m in results.items() if m["status"] != MEMBER_ERROR}  # an error is no score
        ending |= {k for k in (decide(scored, set(ending)) or ()) if k in ok} if decide and scored else set()
        for k in sorted(ending):
            cohort.stop(k, evaluation.at.get(k))
            stopped_samples[k] = cohort.member_trainer(k).sample(min(cfg.eval_samples, SAMPLES_IN_CHECKPOINT))
        for k, metrics in results.items():
            latest[k] = {**metrics, "ended": k in ending or step == cfg.steps}
        save = step % cfg.checkpoint_every == 0 or step == cfg.steps or step in cfg.checkpoint_steps or ending
        state = None
        if save and evaluation.state is None:
            state = cohort_checkpoint(cohort, evaluators, latest, stopped_samples)
        elif save:  # the cohort trained on meanwhile: the checkpoint is the cohort of the evaluation's step
            retired = {k: cohort.retired[k] for k in ending}
            state = cohort_checkpoint(cohort, evaluators, latest, stopped_samples,
                                      without_members(evaluation.state, retired), evaluation.at)
        report(dict(latest), state)

    pending: CohortEvaluation | None = None  # an evaluation whose metrics are still computing
    try:
        while cohort.active and cohort.step < cfg.steps:
            stats = cohort.train_step()
            for i, k in enumerate(cohort.active):
                means[k].add({name: value[i] for name, value in stats.items()})
            step = cohort.step
            evaluates = not (step % cfg.eval_every and step != cfg.steps and step not in cfg.checkpoint_steps)
            if pending is not None and (evaluates or pending.ready()):
                conclude(pending)
                pending = None
                if not cohort.active:
                    break
            if not evaluates:
                continue
            pending = measure(step)
            if pending.ready() or step == cfg.steps:
                conclude(pending)
                pending = None
            else:  # the cohort trains on: its state now is the evaluation's checkpoint
                pending.state = cohort.state_dict()
            for k in cohort.active:
                throughput[k].reset()
    finally:
        for evaluate in evaluators:
            evaluate.close()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    return cohort


@dataclass
class CohortEvaluation:
    """The members' evaluations of one step: each measured (or the exception measuring raised),
    the training statistics it reports, and, where its metrics compute while the cohort trains
    on, the member as it was at the step."""

    step: int
    measured: dict[int, Measured | Exception] = field(default_factory=dict)
    train_metrics: dict[int, dict[str, Any]] = field(default_factory=dict)
    at: dict[int, MemberAt] = field(default_factory=dict)
    state: dict[str, Any] | None = None  # the cohort's state at the step, if it trained on before concluding

    def ready(self) -> bool:
        return all(isinstance(m, Exception) or m.ready() for m in self.measured.values())


def member_error(train_metrics: dict[str, Any], err: Exception, penalty: float) -> dict[str, Any]:
    """A member whose evaluation raised: its training statistics, status ``error``, the exception
    as its reason, and a failed run's objective (the searcher is told it failed)."""
    return {"step": train_metrics["step"], "objective": penalty, **train_metrics, "status": MEMBER_ERROR,
            "reason": f"evaluating this member raised {type(err).__name__}: {err}"[:1000]}


def cohort_checkpoint(cohort: CohortTrainer, evaluators: list[Evaluator], latest: dict[int, dict[str, Any]],
                      stopped_samples: dict[int, Any] | None = None, state: dict[str, Any] | None = None,
                      at: dict[int, MemberAt] | None = None) -> dict[str, Any]:
    """The whole cohort (``CohortTrainer.state_dict``, or ``state`` if given: the cohort at an
    earlier step, whose active members were then as in ``at``), every member's evaluation state
    and latest metrics, and samples of the active members and of the stopped ones (as they stopped)."""
    n = min(cohort.cfg0.eval_samples, SAMPLES_IN_CHECKPOINT)
    if state is None:
        state, samples = cohort.state_dict(), {str(k): cohort.member_trainer(k).sample(n) for k in cohort.active}
    else:
        samples = {str(k): cohort.solos[k].sample(n, generator=at[k].generator) for k in state["active"]}
    samples.update({str(k): v for k, v in (stopped_samples or {}).items()})
    return {"cohort": state, "evaluation": [e.state_dict() for e in evaluators],
            "latest": {str(k): v for k, v in latest.items()}, "samples": samples}
