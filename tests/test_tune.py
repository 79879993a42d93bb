"""train_gan inside a real local Ray Tune run: reports, checkpoints, resume after a failure."""

import shutil
import sys
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402

from ganlib.train import train  # noqa: E402
from ganlib.tune import _tune_reporter, load_tune_checkpoint, train_gan  # noqa: E402

BASE = dict(dataset="ring8", width=16, depth=2, batch_size=32, eval_every=2, eval_samples=256, device="cpu")


@pytest.fixture(scope="module", autouse=True)
def _pickle_this_module_by_value():
    # Trial workers cannot import test modules: ship this one's functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_two_trials_report_metrics_and_checkpoints(local_ray, tmp_path):
    tuner = tune.Tuner(
        train_gan,
        param_space=dict(BASE, steps=6, checkpoint_every=4, seed=tune.grid_search([0, 1])),
        tune_config=tune.TuneConfig(metric="hq", mode="max"),
        run_config=tune.RunConfig(name="two", storage_path=str(tmp_path), verbose=0),
    )
    results = tuner.fit()
    assert len(results) == 2 and not results.errors
    for result in results:
        history = result.metrics_dataframe
        assert list(history["step"]) == [2, 4, 6]
        assert {"loss_d", "loss_g", "gp", "modes", "hq", "samples_per_s"} <= set(history.columns)
        state = load_tune_checkpoint(result.checkpoint)
        assert state["step"] == 6 and state["config"]["seed"] == result.config["seed"]


def crash_once_after_step_4(config):
    """First attempt: train to step 4 through the real reporter, then die. Tune retries the
    trial from its last checkpoint; the retry must continue at step 5, not restart."""
    marker = Path(config["_marker"])
    if not marker.exists():
        marker.write_text("crashed")
        train(dict(config, steps=4), _tune_reporter, allow_hparam_change=True)
        raise RuntimeError("simulated node failure")
    train_gan(config)


def test_a_failed_trial_resumes_from_its_checkpoint(local_ray, tmp_path):
    tuner = tune.Tuner(
        crash_once_after_step_4,
        param_space=dict(BASE, steps=8, _marker=str(tmp_path / "marker")),
        run_config=tune.RunConfig(name="resume", storage_path=str(tmp_path), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=1)),
    )
    [result] = tuner.fit()
    assert result.error is None and (tmp_path / "marker").exists()
    steps = list(result.metrics_dataframe["step"])
    assert steps == [2, 4, 6, 8]  # no step repeated: the retry started from the step-4 checkpoint
    state = load_tune_checkpoint(result.checkpoint)
    assert state["step"] == 8

    # and it is the same run as one that never failed
    straight = train(dict(BASE, steps=8), report=lambda m, s: None)
    for key, value in straight.generator.state_dict().items():
        assert torch.equal(value, state["generator"][key])


def crash_once_at_step_10(config):
    """First attempt: die at the step-10 report, after the step-8 checkpoint (taken while its
    evaluation ran, and reported once it was in); Tune retries from that checkpoint."""
    marker = Path(config["_marker"])

    def report(metrics, state):
        if metrics["step"] == 10:
            raise RuntimeError("simulated node failure")
        _tune_reporter(metrics, state)

    if not marker.exists():
        marker.write_text("crashed")
        train(config, report, allow_hparam_change=True)
    train_gan(config)


def test_a_checkpoint_taken_while_its_evaluation_runs_resumes_a_failed_trial_exactly(local_ray, tmp_path):
    # 1,024 points: exact W1 takes 0.1-0.3 s, many tiny steps; the step-8 evaluation is concluded
    # (reported, checkpointed) steps later, its checkpoint holding step 8's state.
    config = dict(BASE, steps=12, score_every=4, checkpoint_every=4, eval_samples=1024, eval_overlap="on")
    tuner = tune.Tuner(
        crash_once_at_step_10,
        param_space=dict(config, _marker=str(tmp_path / "marker")),
        run_config=tune.RunConfig(name="overlap", storage_path=str(tmp_path), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=1)),
    )
    [result] = tuner.fit()
    assert result.error is None and (tmp_path / "marker").exists()
    assert list(result.metrics_dataframe["step"]) == [2, 4, 6, 8, 10, 12]  # the retry went on from step 8

    history = []  # the same run, never failed, without the overlap
    straight = train(dict(config, eval_overlap="off"), report=lambda m, s: history.append(m))
    state = load_tune_checkpoint(result.checkpoint)
    for key, value in straight.generator.state_dict().items():
        assert torch.equal(value, state["generator"][key])
    assert result.metrics["objective"] == history[-1]["objective"] and result.metrics["w1"] == history[-1]["w1"]


def crash_after_damaging_the_last_checkpoint(config):
    """First attempt: train to step 4 (checkpoints at 2 and 4), truncate the step-4 checkpoint as
    a node dying mid-write would, then die. The retry must skip it for the step-2 one."""
    marker = Path(config["_marker"])
    if not marker.exists():
        marker.write_text("crashed")
        train(dict(config, steps=4), _tune_reporter, allow_hparam_change=True)
        newest = max(Path(config["_storage"]).rglob("checkpoint_*/checkpoint.pt"), key=lambda p: p.parent.name)
        newest.write_bytes(newest.read_bytes()[:100])
        raise RuntimeError("simulated node failure while writing")
    train_gan(config)


def test_a_damaged_checkpoint_falls_back_to_the_previous_good_one(local_ray, tmp_path, caplog):
    tuner = tune.Tuner(
        crash_after_damaging_the_last_checkpoint,
        param_space=dict(BASE, steps=8, checkpoint_every=2, _marker=str(tmp_path / "marker"),
                         _storage=str(tmp_path / "damaged")),
        run_config=tune.RunConfig(name="damaged", storage_path=str(tmp_path), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=1),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=3)),
    )
    [result] = tuner.fit()
    assert result.error is None
    steps = list(result.metrics_dataframe["step"])
    assert steps == [2, 4, 4, 6, 8]  # resumed from step 2: step 4 is reported again
    straight = train(dict(BASE, steps=8), report=lambda m, s: None)
    state = load_tune_checkpoint(result.checkpoint)
    for key, value in straight.generator.state_dict().items():
        assert torch.equal(value, state["generator"][key])  # the same run as one that never failed


class GuardedCounts(tune.Callback):
    """As the sweep's logger: state saved by Tune, and a ``setup`` that checks that Tune's restore
    did not fail."""

    def __init__(self):
        self.completed = 0

    def setup(self, **info):
        from ganlib.tune_state import check_restored

        check_restored("counts", "the counting run")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.completed += 1

    def get_state(self):
        return {"completed": self.completed}

    def set_state(self, state):
        self.completed = state["completed"]


def report_once(config):
    tune.report({"score": config["x"]})


def test_truncated_tune_state_files_are_set_aside_before_a_restore(local_ray, tmp_path):
    """A driver killed while Tune copies its state into the storage path leaves truncated files
    (a 0-byte callback-states-*.pkl was seen after a SIGKILL in the three-kills test). Tune
    restores each kind's newest file unchecked and comes back with no trials; with the session
    of the truncated file set aside, it restores the session before, whole."""
    from ganlib.tune_state import set_aside_unreadable_state

    path = tmp_path / "truncated"
    tune.Tuner(report_once, param_space={"x": tune.grid_search([1, 2])},
               run_config=tune.RunConfig(name="truncated", storage_path=str(tmp_path), verbose=0,
                                         callbacks=[GuardedCounts()])).fit()
    session = sorted(p.name for p in path.glob("experiment_state-*.json"))[-1].removeprefix("experiment_state-")
    later = "9999" + session[4:].removesuffix(".json")  # a later session's files, cut short by the kill
    (path / f"callback-states-{later}.pkl").write_bytes(b"")
    shutil.copytree(path, tmp_path / "as_is")  # a failed restore writes state of its own: try it on a copy
    shutil.copytree(path, tmp_path / "guarded")
    # what the resumed sweep met: Tune loads the newest file unchecked, logs the EOFError, and the
    # restored run has no trials at all (its own new state file says so: the next resume too)
    assert len(tune.Tuner.restore(str(tmp_path / "as_is"), report_once, resume_unfinished=True).fit()) == 0
    # the sweep's guard (its logger calls check_restored in setup): the restore fails, naming Tune's error
    from ganlib.tune_state import RestoreFailed, restoring

    with pytest.raises(RestoreFailed, match="could not restore the counting run .EOFError"), \
            restoring("counts", "the counting run"):
        tune.Tuner.restore(str(tmp_path / "guarded"), report_once, resume_unfinished=True).fit()
    # no callback state at all (the only one set aside): not a failed restore, the trials come back
    shutil.copytree(path, tmp_path / "no_callback_state", ignore=shutil.ignore_patterns("callback-states-*"))
    with restoring("counts", "the counting run"):
        results = tune.Tuner.restore(str(tmp_path / "no_callback_state"), report_once, resume_unfinished=True).fit()
    assert sorted(r.metrics["score"] for r in results) == [1, 2]

    # the later session's experiment state loads, but restored beside the session before's callback
    # state it would mix two sessions: the later session is set aside whole
    (path / f"experiment_state-{later}.json").write_text((path / f"experiment_state-{session}").read_text())
    aside = set_aside_unreadable_state(str(path))
    assert sorted(aside) == [f"callback-states-{later}.pkl", f"experiment_state-{later}.json"]
    assert (path / f"callback-states-{later}.pkl.unreadable").exists()
    assert (path / f"experiment_state-{later}.json.set-aside").exists()
    # a later session whose copy stopped before its callback state reached the storage path
    partial = "9998" + later[4:]
    (path / f"experiment_state-{partial}.json").write_text((path / f"experiment_state-{session}").read_text())
    assert set_aside_unreadable_state(str(path)) == [f"experiment_state-{partial}.json"]
    results = tune.Tuner.restore(str(path), report_once, resume_unfinished=True).fit()
    assert sorted(r.metrics["score"] for r in results) == [1, 2] and not results.errors
    assert set_aside_unreadable_state(str(path)) == []  # nothing more to set aside


def test_a_state_file_cut_short_is_restored_from_its_drivers_staged_copy(local_ray, tmp_path):
    """A stage's first driver session killed while Tune copied its state into the storage path
    (met in CI: the confirmation stage's basic variant generator state cut short). With no session
    before it, setting the session aside leaves nothing to restore; but the driver wrote the file
    whole into its staging folder on this machine first, and the file is restored from there."""
    from ray.train.constants import _get_ray_train_session_dir

    from ganlib.tune_state import set_aside_unreadable_state

    path = tmp_path / "staged"
    tune.Tuner(report_once, param_space={"x": tune.grid_search([1, 2])},
               run_config=tune.RunConfig(name="staged", storage_path=str(tmp_path), verbose=0)).fit()
    [state] = path.glob("basic-variant-state-*.json")
    whole = state.read_bytes()
    state.write_bytes(whole[: len(whole) // 2])  # cut short by the kill
    [experiment] = path.glob("experiment_state-*.json")
    experiment.unlink()  # and the experiment state never copied at all
    assert set_aside_unreadable_state(str(path)) == []
    assert state.read_bytes() == whole and experiment.exists()
    results = tune.Tuner.restore(str(path), report_once, resume_unfinished=True).fit()
    assert sorted(r.metrics["score"] for r in results) == [1, 2] and not results.errors

    # the restored run's driver ran on another machine (no staged copy here): its session is set aside
    newest = sorted(path.glob("basic-variant-state-*.json"))[-1]
    assert newest != state
    for staged in Path(_get_ray_train_session_dir()).glob(f"*/staged/driver_artifacts/{newest.name}"):
        staged.unlink()
    newest.write_bytes(newest.read_bytes()[:10])
    assert newest.name in set_aside_unreadable_state(str(path)) and state.read_bytes() == whole


def test_a_stage_with_no_whole_state_runs_again_instead_of_failing_every_resume(local_ray, tmp_path):
    """A session whose search algorithm's state never reached the storage path (killed during
    its first copy, no staged copy on this machine) restores without an error and runs every
    trial again: it is set aside. With no experiment state left, Tune's restore would fail on
    every resume: the run's tuner.pkl is set aside, and the stage starts again."""
    from ganlib.tune_state import set_aside_unreadable_state, start_afresh_without_state

    tune.Tuner(report_once, param_space={"x": tune.grid_search([1, 2])},
               run_config=tune.RunConfig(name="cut", storage_path=str(tmp_path), verbose=0,
                                         callbacks=[GuardedCounts()])).fit()
    path = tmp_path / "cut"
    [generator] = path.glob("basic-variant-state-*.json")
    generator.rename(tmp_path / generator.name)  # never copied (and not staged: another machine's driver)
    assert start_afresh_without_state(str(path)) is False  # an experiment state is there
    aside = set_aside_unreadable_state(str(path))
    assert sorted(a.split("-")[0] for a in aside) == ["callback", "experiment_state"]
    assert start_afresh_without_state(str(path)) is True
    assert not tune.Tuner.can_restore(str(path)) and (path / "tuner.pkl.set-aside").exists()
    results = tune.Tuner(report_once, param_space={"x": tune.grid_search([1, 2])},
                         run_config=tune.RunConfig(name="cut", storage_path=str(tmp_path), verbose=0)).fit()
    assert sorted(r.metrics["score"] for r in results) == [1, 2] and tune.Tuner.can_restore(str(path))
