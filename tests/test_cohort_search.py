"""Cohort sweeps' searcher and rungs: every member is its own Optuna trial, members of one cohort
share what a cohort must share, each is told its own result; Tune's ASHA decides for members."""

import numpy as np
import optuna
import pytest
from ray.tune.schedulers import ASHAScheduler

from ganlib.cohort import SHARED
from ganlib.cohort_search import MEMBERS_KEY, NUMBERS_KEY, CohortSearch, MemberRungs
from ganlib.report import optuna_record
from ganlib.spaces import load_space


def _search(size=4, total=10, space="wgan_gp_lambda", seed=0):
    return CohortSearch(load_space(space), "objective", seed=seed, study_name="cohorts", size=size, total=total)


def test_members_share_what_a_cohort_must_and_each_is_an_optuna_trial():
    search = _search()
    space = search.space
    cohorts = [search.suggest(t) for t in ("a", "b", "c")]
    assert search.suggest("d") == search.FINISHED
    assert [len(c[MEMBERS_KEY]) for c in cohorts] == [4, 4, 2]  # 10 members in all
    numbers = [n for c in cohorts for n in c[NUMBERS_KEY]]
    assert sorted(numbers) == list(range(10)) and len(search._ot_study.trials) == 10
    shared = [p.target for p in space.params if p.target in SHARED]
    assert shared == ["n_critic"]  # the space searches one shared field, and others that may differ
    for cohort in cohorts:
        members = cohort[MEMBERS_KEY]
        assert len({m["n_critic"] for m in members}) == 1
        assert len({tuple(sorted(m.items())) for m in members}) == len(members)  # otherwise each its own
    assert len({c[MEMBERS_KEY][0]["n_critic"] for c in cohorts}) > 1  # shared within, drawn per cohort
    # the start points come first, both in the first cohort (they share n_critic 5)
    starts = space.start_points()
    assert [{k: m[k] for k in starts[0]} for m in cohorts[0][MEMBERS_KEY][:2]] == starts


def test_a_start_point_waits_for_a_cohort_with_its_shared_values(tmp_path):
    path = tmp_path / "two_starts.yaml"
    path.write_text("""name: two_starts
fixed: {loss: wgan_gp, optimizer: adam}
params:
  n_critic: {type: int, low: 1, high: 10}
  lr_d: {type: loguniform, low: 1.0e-5, high: 1.0e-2}
start:
  - {n_critic: 5, lr_d: 1.0e-4}
  - {n_critic: 1, lr_d: 1.0e-3}
""")
    search = CohortSearch(load_space(str(path)), "objective", 0, "s", size=3, total=6)
    first, second = search.suggest("a")[MEMBERS_KEY], search.suggest("b")[MEMBERS_KEY]
    assert first[0]["n_critic"] == 5 and {m["n_critic"] for m in first} == {5}
    assert second[0] == {"loss": "wgan_gp", "optimizer": "adam", "n_critic": 1, "lr_d": 1.0e-3}
    assert {m["n_critic"] for m in second} == {1}


@pytest.mark.parametrize("size, total, sizes", [(4, 8, [2, 2, 2, 2]), (4, 4, [1, 1, 1, 1]), (8, 16, [4, 4, 4, 4]),
                                                 (4, 20, [4, 4, 4, 4, 4])])
def test_every_start_point_gets_a_cohort_when_their_shared_values_differ(size, total, sizes):
    # compare_losses' four start points differ in loss (shared): a first cohort filled to K with
    # sampled members of the first start's loss would leave the budget short of the other three
    search = _search(size=size, total=total, space="compare_losses")
    starts = search.space.start_points()
    cohorts = []
    while (cohort := search.suggest(f"t{len(cohorts)}")) != search.FINISHED:
        cohorts.append(cohort[MEMBERS_KEY])
    assert [len(c) for c in cohorts] == sizes
    ran = [m for c in cohorts for m in c]
    for start in starts:
        assert any(all(m.get(k) == v for k, v in start.items()) for m in ran), start
    assert all(len({m["loss"] for m in c}) == 1 for c in cohorts)


def test_each_member_is_told_its_own_result_and_the_record_survives_a_restore(tmp_path):
    search = _search(size=3, total=6)
    a, b = search.suggest("a"), search.suggest("b")
    search.on_trial_result("a", {"members": {"1": {"ended": True, "objective": 0.5}, "0": {"objective": 0.9}}})
    study = search._ot_study
    assert study.trials[a[NUMBERS_KEY][1]].state == optuna.trial.TrialState.COMPLETE
    assert study.trials[a[NUMBERS_KEY][1]].value == 0.5
    assert study.trials[a[NUMBERS_KEY][0]].state == optuna.trial.TrialState.RUNNING  # still training
    search.on_trial_complete("a", {"members": {"0": {"objective": 0.3}, "2": {"objective": 0.7}}})
    assert [study.trials[n].value for n in a[NUMBERS_KEY]] == [0.3, 0.5, 0.7]
    search.on_trial_result("b", {"members": {"2": {"ended": True, "objective": 1e3, "status": "error"}}})
    assert study.trials[b[NUMBERS_KEY][2]].state == optuna.trial.TrialState.FAIL  # its evaluation raised
    search.on_trial_complete("b", None, error=True)
    assert {study.trials[n].state for n in b[NUMBERS_KEY]} == {optuna.trial.TrialState.FAIL}
    search.save_to_dir(str(tmp_path))
    record = optuna_record(str(tmp_path))  # what the report reads, from the saved searcher state
    assert sorted((r["number"], r["state"], r["value"]) for r in record) == [
        *[(n, "COMPLETE", v) for n, v in zip(a[NUMBERS_KEY], (0.3, 0.5, 0.7), strict=True)],
        *[(n, "FAIL", None) for n in b[NUMBERS_KEY]]]
    restored = _search(size=3, total=6)
    restored.restore_from_dir(str(tmp_path))
    assert restored.suggest("c") == restored.FINISHED and restored.members == search.members


def test_tpe_learns_from_the_members_it_was_told():
    """Told that small n_critic is good, the next cohorts' shared n_critic follows it."""
    search = _search(size=2, total=40, seed=3)
    drawn = []
    for i in range(20):
        cohort = search.suggest(str(i))
        n = cohort[MEMBERS_KEY][0]["n_critic"]
        drawn.append(n)
        search.on_trial_complete(str(i), {"members": {str(k): {"objective": float(n) + 0.01 * k}
                                                      for k in range(len(cohort[MEMBERS_KEY]))}})
    assert np.mean(drawn[-5:]) < np.mean(drawn[1:6])  # past the start points and random start-up


def _asha():
    return ASHAScheduler(time_attr="step", metric="objective", mode="min", max_t=2000, grace_period=100,
                         reduction_factor=5)


def test_members_are_stopped_by_tunes_own_asha_rule():
    rungs = MemberRungs(_asha())
    values = [3.0, 2.0, 4.0, 1.0, 5.0, 1.5]
    stops = [rungs.stop(f"m{i}", 100, v) for i, v in enumerate(values)]
    # the rule, computed here: stop when worse than the best 1/5 of the values recorded before
    expected = [bool(i and v > np.percentile(values[:i], 100 / 5)) for i, v in enumerate(values)]
    assert stops == expected == [False, False, True, False, True, False]
    assert rungs.stop("m3", 500, 0.5) is False and rungs.stop("m1", 500, 0.9) is True  # the next rung
    assert rungs.stop("m3", 100, 9.0) is False  # a rung is decided once per member
    assert rungs.stop("m2", 100, 0.1) is True  # and met again (after a restart), the same decision


def test_a_member_ending_by_its_own_verdict_at_a_rung_is_recorded_as_tune_records_a_stopped_trial():
    # Tune, for a trial its stopper ends (a collapse at the rung's step): no scheduler decision,
    # then stop_trial -> scheduler.on_trial_complete(last result), which records it at the rung
    from ray.tune.experiment import Trial

    reference, members = _asha(), MemberRungs(_asha())
    sequence = [(0.5, True), (2.0, False), (3.0, False), (0.7, True), (2.5, False), (1.0, False)]
    expected, got = [], []
    for i, (objective, collapsed) in enumerate(sequence):
        trial = Trial("__fake", trial_id=f"t{i}", stub=True)
        reference.on_trial_add(None, trial)
        result = {"step": 100, "objective": objective}
        if collapsed:
            reference.on_trial_complete(None, trial, result)
            expected.append(False)
        else:
            expected.append(reference.on_trial_result(None, trial, result) == "STOP")
        got.append(members.stop(f"t{i}", 100, objective, ending=collapsed))
    assert got == expected and True in got  # a cutoff that the collapsed trials' records decided
    assert dict(members.scheduler._brackets[0]._rungs[-1][1]) == dict(reference._brackets[0]._rungs[-1][1])
    unrecorded = MemberRungs(_asha())  # what the members met before: the collapsed ones never recorded
    assert [unrecorded.stop(f"t{i}", 100, v) for i, (v, c) in enumerate(sequence) if not c] != \
        [g for g, (_, c) in zip(got, sequence, strict=True) if not c]


def test_member_rungs_survive_a_restore_into_a_new_scheduler():
    rungs = MemberRungs(_asha())
    for i, v in enumerate([3.0, 2.0, 4.0]):
        rungs.stop(f"m{i}", 100, v)
    restored = MemberRungs(_asha())
    restored.set_records(rungs.records())
    assert restored.stop("m2", 100, 0.1) is True  # remembered
    assert restored.stop("m9", 100, 3.5) is True and MemberRungs(_asha()).stop("m9", 100, 3.5) is False


@pytest.mark.parametrize("size, total, expected", [(4, 10, [4, 4, 2]), (1, 3, [1, 1, 1]), (8, 8, [8])])
def test_cohort_sizes_add_up_to_the_trial_count(size, total, expected):
    search = _search(size=size, total=total)
    sizes = []
    while (cohort := search.suggest(str(len(sizes)))) != search.FINISHED:
        sizes.append(len(cohort[MEMBERS_KEY]))
    assert sizes == expected
