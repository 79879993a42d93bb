"""What a sweep of cohorts tells its searcher and its scheduler: every member is a trial.

``CohortSearch`` is Tune's searcher for cohort trials. A Tune trial is a cohort of up to ``size``
members, and each member is its own Optuna trial, told its own result when it ends. The first
member of a cohort samples every parameter; the others are asked with the cohort's shared
parameters fixed (Optuna's ``enqueue_trial`` with a partial point: the sampler draws the rest),
so a cohort's members differ only where members may differ (``cohort.SHARED``). The space's
start points come first, a start point joining a cohort whose shared values it has; while start
points of other shared values wait, cohorts are sized so that the budget reaches every one.

``MemberRungs`` puts members through Tune's own ASHA: each member is added to Ray's scheduler as
a trial would be (drawing its bracket the same way) and its objective at a rung step gets the
scheduler's own decision, so a member is stopped exactly when the same trial alone would be.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import optuna
from ray.tune import Callback
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from .cohort import MEMBER_ERROR, MEMBERS_KEY, NUMBERS_KEY, RUNGS_KEY, SHARED, member_id, members_of  # noqa: F401
from .spaces import SearchSpace


class CohortSearch(Searcher):
    def __init__(self, space: SearchSpace, metric: str, seed: int, study_name: str, size: int, total: int,
                 random: bool = False):
        super().__init__(metric=metric, mode="min")
        sampler = optuna.samplers.RandomSampler(seed=seed) if random else optuna.samplers.TPESampler(seed=seed)
        self._ot_study = optuna.create_study(direction="minimize", sampler=sampler, study_name=study_name)
        self.space, self.size, self.total = space, size, total
        self.shared = tuple(p.name for p in space.params if p.target in SHARED)
        self.starts = [dict(point) for point in space.start_points()]
        self.asked = 0
        self.members: dict[str, list[int]] = {}  # Tune trial id -> its members' Optuna trial numbers
        self.told: set[int] = set()

    def suggest(self, trial_id: str) -> dict[str, Any] | str:
        if self.asked >= self.total:
            return Searcher.FINISHED
        configs, numbers, shared = [], [], None
        for _ in range(self._cohort_size()):
            start = self._next_start(shared)
            if start is not None:
                self._ot_study.enqueue_trial(start, skip_if_exists=False)
            elif shared:
                self._ot_study.enqueue_trial(shared, skip_if_exists=False)
            trial = self._ot_study.ask()
            fixed = self.space.define_by_run(trial)
            if shared is None:
                shared = {name: trial.params[name] for name in self.shared if name in trial.params}
            configs.append({**fixed, **self.space.to_config(trial.params)})
            numbers.append(trial.number)
        self.asked += len(numbers)
        self.members[trial_id] = numbers
        return {MEMBERS_KEY: configs, NUMBERS_KEY: numbers}

    def _cohort_size(self) -> int:
        """Members of the next cohort: up to ``size``, and while start points with other shared
        values wait, the budget left split evenly over their cohorts, so that every start point
        gets a cohort of its own (a full first cohort would leave the budget short of them)."""
        left = self.total - self.asked
        groups = len({tuple(point.get(k) for k in self.shared) for point in self.starts})
        return min(self.size, left) if groups == 0 else min(self.size, max(1, math.ceil(left / groups)))

    def _next_start(self, shared: dict[str, Any] | None) -> dict[str, Any] | None:
        """The first start point left that fits a cohort of these shared values (any, for a new cohort)."""
        for i, point in enumerate(self.starts):
            if shared is None or all(point.get(k) == v for k, v in shared.items()):
                return self.starts.pop(i)
        return None

    # -- what Optuna is told --------------------------------------------------------------------
    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Members that ended in this result are told now (a cohort runs on after a member stops)."""
        for k, member in members_of(result).items():
            if member.get("ended") and member.get("status") == MEMBER_ERROR:
                self._tell(self.members[trial_id][k], None, optuna.trial.TrialState.FAIL)
            elif member.get("ended"):
                self._tell(self.members[trial_id][k], member.get(self.metric))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        """The cohort ended: its members not told yet reached the budget, or failed with it."""
        members = members_of(result)
        for k, number in enumerate(self.members.get(trial_id, [])):
            if error:
                self._tell(number, None, optuna.trial.TrialState.FAIL)
            else:
                self._tell(number, (members.get(k) or {}).get(self.metric))

    def _tell(self, number: int, value: float | None, state=None) -> None:
        if number in self.told:
            return
        self.told.add(number)
        if state is None:  # a member with no value was stopped before its first evaluation
            ok = value is not None and math.isfinite(value)
            state = optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.PRUNED
        self._ot_study.tell(number, value if state == optuna.trial.TrialState.COMPLETE else None, state=state)

    # -- Tune's experiment checkpoints ------------------------------------------------------------
    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as out:
            pickle.dump(self.__dict__.copy(), out)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as saved:
            self.__dict__.update(pickle.load(saved))


class _Member:
    """What Ray's ASHA reads of a trial: its id."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


class MemberRungs:
    """Ray's ASHA scheduler deciding for members: ``stop(member, step, objective)`` is True when
    the scheduler would stop a trial reporting this result. The scheduler must have its metric
    ("objective", mode "min") and time attribute ("step").

    A decision is remembered: a cohort restarted from a checkpoint before a rung (a lost worker,
    a resumed sweep) meets the rung again, and gets the decision it got the first time. (Ray's
    ASHA lets a trial that reports a rung twice through the second time.)"""

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.decided: dict[str, bool] = {}  # "member@step" -> stopped

    def stop(self, member: str, step: int, objective: float, ending: bool = False) -> bool:
        """``ending``: the member ends at this step by its own verdict (collapsed, diverged,
        stalled). It is recorded at the rung without a decision, as Tune's ASHA records a trial its
        stopper ends (``on_trial_complete``), so later cutoffs are those of a sweep of trials."""
        key = f"{member}@{step}"
        if key not in self.decided:
            trial = _Member(member)
            if member not in self.scheduler._trial_info:  # noqa: SLF001 - ASHA's member -> bracket map
                self.scheduler.on_trial_add(None, trial)
            result = {"step": step, "objective": objective}
            if ending:
                self.scheduler.on_trial_complete(None, trial, result)
                self.decided[key] = False
            else:
                self.decided[key] = self.scheduler.on_trial_result(None, trial, result) == TrialScheduler.STOP
        return self.decided[key]

    def records(self) -> dict[str, Any]:
        """The rung records and each member's bracket (Tune saves no scheduler state)."""
        brackets = self.scheduler._brackets  # noqa: SLF001
        index = {id(b): i for i, b in enumerate(brackets)}
        return {"rungs": [[(milestone, dict(recorded)) for milestone, recorded in b._rungs] for b in brackets],
                "members": {m: index[id(b)] for m, b in self.scheduler._trial_info.items()},
                "num_stopped": self.scheduler._num_stopped, "decided": dict(self.decided)}

    def set_records(self, state: dict[str, Any]) -> None:
        brackets = self.scheduler._brackets  # noqa: SLF001
        for bracket, rungs in zip(brackets, state["rungs"], strict=True):
            bracket._rungs = [(milestone, dict(recorded)) for milestone, recorded in rungs]
        self.scheduler._trial_info = {m: brackets[i] for m, i in state["members"].items()}
        self.scheduler._num_stopped = state["num_stopped"]
        self.decided = dict(state.get("decided", {}))


class MemberRungsHost(Callback):
    """Runs the sweep's ``MemberRungs`` in a named actor that cohort trials consult at their rung
    steps (``ray.get_actor(name)``), and keeps its records with Tune's experiment state, so a
    resumed sweep's members meet the rungs an uninterrupted sweep's would."""

    def __init__(self, scheduler, name: str):
        self.scheduler, self.name = scheduler, name
        self._actor = None
        self._records: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler, "name": self.name, "_actor": None, "_records": self._records}

    def setup(self, **info) -> None:
        import ray

        self._actor = ray.remote(MemberRungs).options(name=self.name, num_cpus=0, get_if_exists=True).remote(
            self.scheduler)
        if self._records is not None:
            ray.get(self._actor.set_records.remote(self._records))

    def get_state(self) -> dict[str, Any]:
        import ray

        if self._actor is not None:
            self._records = ray.get(self._actor.records.remote())
        return {"records": self._records}

    def set_state(self, state: dict[str, Any]) -> None:
        import ray

        self._records = state.get("records")
        if self._actor is not None and self._records is not None:
            ray.get(self._actor.set_records.remote(self._records))
