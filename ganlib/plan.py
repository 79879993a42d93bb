"""The scheduler choice, decided in one place: ``plan_sweep`` returns the scheduler, the searcher,
the metric they compare, the steps at which trials must checkpoint, and what to log.

* ``asha`` (default): asynchronous successive halving on ``objective`` (a trial's best score so
  far), reduction factor 8, the first rung at a twentieth of the budget: with the ``default``
  preset, rungs at steps 100 and 800. Chosen by replaying schedules on recorded sweeps
  (``bench/asha_replay.py``: the score at step 100 ranks the final scores with a rank correlation
  of 0.54-0.82 on grid25) and measured live (``bench/search_efficiency.py``: the same best as
  random search on 5 seeds with 32 % of its work; reduction 5, rungs at 100 and 500, found the
  same with 41 %; reduction 2 from a quarter of the budget spent 49 % for a worse best). A space whose
  configurations start slowly moves the first rung (``--first-rung``) or softens the cut
  (``--rung-reduction``). Every rung is a checkpoint and a scored evaluation, so a trial stopped
  there leaves its weights and its score of that step.
* ``hyperband``: asynchronous Hyperband, i.e. ASHA in several brackets (Li et al. 2020), reduction
  factor 3, only brackets that prune within the budget. Nothing is paused, so nothing replays.
* ``pbt``: population-based training on ``score`` (current performance, not the best so far): an
  exploited trial takes a top-quarter trial's checkpoint and config, then perturbs that config
  inside the space (``SpaceExplorer``: bounds and conditions respected, its own seeded RNG).
  PBT drives the search itself; the population is sampled from the space.
* ``none``: every trial runs its whole budget (collapse and stall stops still apply).

Searcher (all but PBT): Optuna's TPE through Tune's ``OptunaSearch`` (or its random sampler, the
baseline of ``bench/search_efficiency.py``), seeded, the space's start points first. It is told
each finished trial's last ``objective``: the best score a healthy trial reached (completed,
stopped by a rung or stalled), the penalty for a collapsed or diverged one (worse than any healthy
score: ``ganlib.evaluate``), and FAIL for an error. An interrupted trial is told nothing until the
resumed sweep finishes it.

Cohorts (``--cohort K``, asha or none): each Tune trial trains up to K members; ``_cohort_plan``
makes every member its own Optuna trial and its own ASHA trial (``cohort_search.py``), and Tune
runs the cohorts first in, first out.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from ray.tune import Callback
from ray.tune.stopper import Stopper

from .config import HYPERPARAMS
from .rungs import ASHA_REDUCTION, HYPERBAND_REDUCTION, aligned, asha_first_rung, asha_rungs
from .settings import SweepSettings
from .spaces import SearchSpace

PBT_QUANTILE = 0.25
PBT_RESAMPLE_PROBABILITY = 0.25
PBT_FACTORS = (0.8, 1.2)


@dataclass
class SweepPlan:
    scheduler: Any  # a Tune TrialScheduler, or None for FIFO
    search_alg: Any  # a Tune Searcher / SearchAlgorithm
    metric: str  # what the scheduler and searcher compare (mode min)
    checkpoint_every: int  # steps between regular checkpoints
    checkpoint_steps: tuple[int, ...]  # steps that must checkpoint and score (rungs, perturbations)
    max_concurrent: int | None  # for TuneConfig (None when the search algorithm limits it)
    num_to_keep: int  # checkpoints kept per trial
    log_hparams: bool  # the config can change during a trial (PBT): log it by step
    description: str  # one line for the parent run and the summary
    population: list[dict[str, Any]] | None = None  # PBT: the sampled starting configs
    callbacks: list[Any] | None = None  # Tune callbacks the schedule needs (its state across restarts)
    # Reuse trial actors (no new process, imports and dataset per trial). Not under PBT: in Ray
    # 2.60 an exploited trial restarted in a reused actor reported another trial's results.
    reuse_actors: bool = True
    num_samples: int | None = None  # Tune trials (None: one per configuration); cohorts: a bound
    member_rungs: str | None = None  # cohorts under ASHA: the name of the actor holding the members' rungs

    @property
    def mode(self) -> str:
        return "min"  # every primary metric is a distance


class CollapseStopper(Stopper):
    """Tune stopper: a trial whose detector says collapsed, diverged or stalled stops at once
    (the trial ends itself too; this makes Tune record it as stopped, not failed)."""

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return result.get("status", "ok") != "ok"

    def stop_all(self) -> bool:
        return False


def trial_dirname(trial) -> str:
    """Trial folders named by trial id alone (Tune's default appends the config, truncated)."""
    return f"trial_{trial.trial_id}"


def trial_id_of_dirname(name: str) -> str:
    return name.removeprefix("trial_")


def _regular_checkpoints(settings: SweepSettings) -> int:
    """About five checkpoints per trial (plus the final one): they bound the work lost to a
    failure without flooding the storage."""
    return settings.eval_every * max(1, settings.steps // 5 // settings.eval_every)


def plan_sweep(settings: SweepSettings, space: SearchSpace) -> SweepPlan:
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

    steps, unit = settings.steps, settings.eval_every
    if settings.scheduler == "pbt":
        interval = settings.score_every
        population = [{**space.fixed, **c} for c in space.sample_configs(settings.num_trials, seed=settings.seed)]
        from ray.tune.search.basic_variant import BasicVariantGenerator

        scheduler = PopulationBasedTraining(
            time_attr="step", perturbation_interval=interval, quantile_fraction=PBT_QUANTILE,
            custom_explore_fn=SpaceExplorer(space, settings.seed), synch=False)
        concurrent = settings.max_concurrent or settings.num_trials  # >= the population (check_settings)
        return SweepPlan(scheduler, BasicVariantGenerator(points_to_evaluate=population, max_concurrent=concurrent),
                         "score", interval, tuple(range(interval, steps, interval)), None, 4, True,
                         f"PBT: population {settings.num_trials}, exploit every {interval} steps, quantile "
                         f"{PBT_QUANTILE}, perturbations x{PBT_FACTORS} (log scale; linear: -+0.2 of the range) "
                         "clipped to the space", population,
                         reuse_actors=False)
    search = SpaceSearch(space, metric="objective", seed=settings.seed, study_name=settings.name,
                         random=settings.searcher == "random") if settings.cohort == 1 else None
    regular = _regular_checkpoints(settings)
    if settings.scheduler == "asha":
        grace, reduction = asha_first_rung(steps, unit, settings.first_rung), settings.rung_reduction or ASHA_REDUCTION
        rungs = asha_rungs(grace, steps, reduction) if grace < steps else []
        scheduler = ASHAScheduler(time_attr="step", max_t=steps, grace_period=grace,
                                  reduction_factor=reduction) if rungs else None
        text = f"ASHA: reduction {reduction}, rungs at steps {', '.join(map(str, rungs))}"
        if settings.cohort > 1:
            return _cohort_plan(settings, space, scheduler, rungs, regular, text)
    elif settings.scheduler == "hyperband":
        reduction = settings.rung_reduction or HYPERBAND_REDUCTION
        grace = settings.first_rung or aligned(steps / reduction ** 2, unit)
        brackets = max(1, sum(1 for s in range(8) if grace * reduction ** s < steps))
        per_bracket = [asha_rungs(grace, steps, reduction, b) for b in range(brackets)]
        rungs = sorted({r for b in per_bracket for r in b})
        scheduler = ASHAScheduler(time_attr="step", max_t=steps, grace_period=grace,
                                  reduction_factor=reduction, brackets=brackets) if rungs else None
        text = (f"asynchronous Hyperband: reduction {reduction}, {brackets} brackets, rungs "
                + "; ".join(", ".join(map(str, b)) for b in per_bracket))
    else:
        scheduler, rungs, text = None, [], "no early stopping by a scheduler (collapse and stall stops only)"
        if settings.cohort > 1:
            return _cohort_plan(settings, space, None, [], regular, text)
    return SweepPlan(scheduler, search, "objective", regular, tuple(rungs), settings.max_concurrent, 2, False,
                     f"{text}; Optuna {'random sampling' if settings.searcher == 'random' else 'TPE'}",
                     callbacks=[RungRecords(scheduler)] if scheduler else [])


def _cohort_plan(settings: SweepSettings, space: SearchSpace, scheduler, rungs: list[int], regular: int,
                 text: str) -> SweepPlan:
    """Cohort trials (``--cohort K``): each Tune trial trains up to K members; every member is its
    own Optuna trial (``cohort_search.CohortSearch``) and meets ASHA's rungs itself, in an actor
    consulted by the trial (``MemberRungsHost``). Tune schedules the cohorts first in, first out:
    a cohort ends when its last member stops."""
    from .cohort_search import CohortSearch, MemberRungsHost

    search = CohortSearch(space, "objective", seed=settings.seed, study_name=settings.name, size=settings.cohort,
                          total=settings.num_trials, random=settings.searcher == "random")
    callbacks, rungs_actor = [], None
    if scheduler is not None:
        scheduler.set_search_properties("objective", "min")
        rungs_actor = f"ganlib-member-rungs/{settings.name}"
        callbacks.append(MemberRungsHost(scheduler, rungs_actor))
    # num_samples is a bound: the searcher ends the search (FINISHED) once every member is asked,
    # after ceil(trials / K) Tune trials, or more where start points need cohorts of their own.
    return SweepPlan(None, search, "objective", regular, tuple(rungs), settings.max_concurrent, 2, False,
                     f"{text} (per cohort member); cohorts of up to {settings.cohort} stacked networks; Optuna "
                     f"{'random sampling' if settings.searcher == 'random' else 'TPE'} per member",
                     callbacks=callbacks, num_samples=settings.num_trials, member_rungs=rungs_actor)


def _optuna_search_class():
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch


class SpaceSearch(_optuna_search_class()):
    """Tune's OptunaSearch over a search space, define-by-run, start points first. Optuna sees
    the space's parameter names; the trial gets config fields (a parameter may set a field under
    another name: ``SearchSpace.to_config``)."""

    def __init__(self, space: SearchSpace, metric: str, seed: int, study_name: str, random: bool = False):
        import optuna

        sampler = optuna.samplers.RandomSampler(seed=seed) if random else optuna.samplers.TPESampler(seed=seed)
        super().__init__(space=space.define_by_run, metric=metric, mode="min", points_to_evaluate=space.start_points(),
                         sampler=sampler, study_name=study_name)
        self.search_space = space

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        return self.search_space.to_config(config) if isinstance(config, dict) else config


class RungRecords(Callback):
    """Keeps an ASHA scheduler's rung records across a driver restart.

    Tune saves the searcher's state and its callbacks' states with every experiment checkpoint,
    but not the scheduler's: a resumed sweep would start with empty rungs and let through trials
    an uninterrupted sweep would have stopped. This callback holds the scheduler (both are
    pickled with the Tuner, so a restored sweep gets the pair), returns its records as its own
    state, and puts them back at the first step after a restore: Tune re-adds restored trials
    after restoring callbacks, and re-adding draws their brackets again."""

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self._pending: dict[str, Any] | None = None

    def get_state(self) -> dict[str, Any]:
        brackets = self.scheduler._brackets  # noqa: SLF001 - ASHA keeps its records here
        index = {id(b): i for i, b in enumerate(brackets)}
        return {"rungs": [[(milestone, dict(recorded)) for milestone, recorded in b._rungs] for b in brackets],
                "trials": {tid: index[id(b)] for tid, b in self.scheduler._trial_info.items()},
                "num_stopped": self.scheduler._num_stopped}

    def set_state(self, state: dict[str, Any]) -> None:
        self._pending = state

    def on_step_begin(self, iteration, trials, **info) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        brackets = self.scheduler._brackets  # noqa: SLF001
        for bracket, rungs in zip(brackets, state["rungs"], strict=True):
            bracket._rungs = [(milestone, dict(recorded)) for milestone, recorded in rungs]
        for tid, i in state["trials"].items():
            if tid in self.scheduler._trial_info:
                self.scheduler._trial_info[tid] = brackets[i]
        self.scheduler._num_stopped = state["num_stopped"]


class SpaceExplorer:
    """PBT's explore step, inside the search space: each searched hyperparameter active in the
    config is resampled (probability 0.25) or perturbed, then clipped to its range: a log-scale
    value x0.8 / x1.2, a linear one by -+0.2 of its range (x0.8 / x1.2 of a linear beta2 in
    [0.9, 0.999] would land on a bound every time), an integer by one step. Structural choices
    (optimizer, loss, constraint...) are never mutated: the checkpoint the trial continues from was
    made with them. Seeded, picklable."""

    def __init__(self, space: SearchSpace, seed: int):
        self.params = [p for p in space.params if p.target in HYPERPARAMS and p.type != "categorical"]
        self.space = space
        self.rng = random.Random(seed)

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        out = dict(config)
        active = self._active_names(out)
        for p in self.params:
            if p.name not in active:
                continue
            if self.rng.random() < PBT_RESAMPLE_PROBABILITY:
                value = self._sample(p)
            elif p.type == "int":
                value = out[p.target] + self.rng.choice((-1, 1)) * (p.step or 1)
            elif p.log:
                value = out[p.target] * self.rng.choice(PBT_FACTORS)
            else:
                value = out[p.target] + (self.rng.choice(PBT_FACTORS) - 1) * (p.high - p.low)
            out[p.target] = self._clip(p, value)
        return out

    def _active_names(self, config: dict[str, Any]) -> set[str]:
        """The parameters set in ``config``, by name: conditions name parameters (an alias's
        condition names the alias, not the field the config holds)."""
        values = dict(self.space.fixed)
        for p in self.space.params:
            if p.active(values) and config.get(p.target) is not None:
                values[p.name] = config[p.target]
        return set(values) - set(self.space.fixed)

    def _sample(self, p) -> float | int:
        if p.log:
            value = math.exp(self.rng.uniform(math.log(p.low), math.log(p.high)))
            return int(round(value)) if p.type == "int" else value
        if p.type == "int":
            return self.rng.randrange(p.low, p.high + 1, p.step or 1)
        return self.rng.uniform(p.low, p.high)

    @staticmethod
    def _clip(p, value: float) -> float | int:
        value = min(max(value, p.low), p.high)
        if p.type == "int":
            return int(round(value))
        if p.step:  # onto the grid, and back inside the range a rounding can leave
            value = min(max(p.low + round((value - p.low) / p.step) * p.step, p.low), p.high)
        return float(value)
