"""Sweeps in-process on local Ray with a local MLflow store: refusals before the start, what the
searcher is told, verdicts, the report, each scheduler's pruning, resume refusals."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from ganlib.config import GanConfig
from ganlib.plan import SpaceExplorer, plan_sweep
from ganlib.preflight import PreflightError, preflight
from ganlib.rungs import asha_rungs
from ganlib.settings import SweepSettings, resolve_paths
from ganlib.spaces import load_space
from ganlib.sweep import SweepFailed, run_sweep

REPO = Path(__file__).resolve().parent.parent


def settings(tmp_path, **kw):
    values = dict(space="wgan_clip", preset="smoke", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                  storage_path=str(tmp_path / "ray"), device="cpu", name="t")
    return SweepSettings(**{**values, **kw})


def write_space(tmp_path, space: dict) -> str:
    path = tmp_path / f"{space['name']}.yaml"
    path.write_text(yaml.safe_dump(space))
    return str(path)


def mlflow_runs(config):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(config.tracking_uri)
    experiment = client.get_experiment_by_name(config.experiment)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("ganlib_role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    return client, parents, children


# -- refused before anything starts ------------------------------------------------------------------
MODEL_SPACES = {  # spaces GanConfig accepts that the data's models refuse (pre-flight resolves them)
    "dcgan_on_points": {"name": "dcgan_on_points", "fixed": {"loss": "wgan", "model": "dcgan"},
                        "params": {"clip": {"type": "loguniform", "low": 1e-3, "high": 1.0}}},
    "dcgan_depth": {"name": "dcgan_depth", "fixed": {"loss": "wgan"},
                    "params": {"depth": {"type": "int", "low": 3, "high": 5}}},
    "batch_of_one": {"name": "batch_of_one", "fixed": {"loss": "wgan"},
                     "params": {"batch_size": {"type": "int", "low": 1, "high": 64, "log": True}}},
}
@pytest.mark.parametrize("change, words", [
    (dict(space="no_such_space"), "no_such_space"),
    (dict(num_trials=0), "--num-trials = 0"),
    (dict(gpus_per_trial=-1.0), "--gpus-per-trial"),
    (dict(gpus_per_trial=0.3), "which has no CUDA device"),
    (dict(cpus_per_trial=64.0), "the private local Ray has"),
    (dict(dataset="mnist"), "data_root"),
    (dict(steps=0), "--steps = 0"),
    (dict(eval_every=5000), "--eval-every = 5000 is invalid: allowed an integer in [1, 40]"),
    (dict(eval_every=10, score_every=15), "a multiple of --eval-every"),
    (dict(first_rung=40), "--first-rung = 40 is invalid: allowed an integer in [10, 39]"),
    (dict(first_rung=15), "--first-rung = 15 is invalid: allowed a multiple of --eval-every"),
    (dict(first_rung=20, scheduler="none"), "unset with --scheduler none"),
    (dict(rung_reduction=1), "--rung-reduction = 1 is invalid: allowed an integer in [2, 10]"),
    (dict(rung_reduction=2, scheduler="pbt", num_trials=4, max_concurrent=4), "unset with --scheduler pbt"),
    (dict(device="cuda"), "a trial uses CUDA only when Ray gave it a GPU"),
    (dict(device="cuda:1", gpus_per_trial=0.5), "'cuda' or 'cuda:0': a trial sees only the GPU Ray gave it"),
    (dict(gpus_per_trial=2), "or 1: a trial trains on one GPU"),
    (dict(tracking_uri="http://127.0.0.1:9/"), "not reachable"),
    (dict(storage_path="/dev/null/ray"), "not writable"),
    (dict(storage_path="/proc/nope"), "not writable"),
    (dict(ray_address="127.0.0.1:1"), "nothing answers at 127.0.0.1:1"),
    (dict(ray_address="http://127.0.0.1:8265"), "dashboard"),
    (dict(scheduler="pbt", num_trials=2), "--scheduler pbt"),
    (dict(scheduler="pbt", num_trials=4, max_concurrent=2), "a smaller live population"),
    (dict(scheduler="pbt", num_trials=8, max_concurrent=4), "allowed unset or an integer >= --num-trials"),
    (dict(confirm_top=2, confirm_seeds=1), "--confirm-seeds = 1 is invalid: allowed an integer >= 2"),
    (dict(max_failures=-1), "--max-failures = -1"),
    (dict(cohort=0), "--cohort = 0 is invalid: allowed an integer in [1, 64]"),
    (dict(cohort=65), "--cohort = 65 is invalid: allowed an integer in [1, 64]"),
    (dict(cohort=4, scheduler="hyperband"), "--cohort = 4 is invalid: allowed 1 with --scheduler hyperband"),
    (dict(cohort=4, scheduler="pbt", num_trials=4, max_concurrent=4), "allowed 1 with --scheduler pbt"),
    (dict(cohort=2, space="loss_penalty_norm"), "spectral normalisation"),
    (dict(space="dcgan_on_points"), "'mlp' or 'auto' for 'ring8': the DCGAN needs image data"),
    (dict(space="dcgan_depth", dataset="digits"), "'depth' = 3 is invalid: allowed unset with model 'dcgan'"),
    (dict(space="batch_of_one", dataset="digits"), "'batch_size' = 1 is invalid: allowed an integer >= 2 with batch"),
])
def test_refused_settings_name_the_flag_and_leave_nothing_behind(tmp_path, change, words):
    import ray

    if change.get("space") in MODEL_SPACES:  # a space whose models the data cannot build
        (tmp_path / "spaces").mkdir()
        change = dict(change, space=write_space(tmp_path / "spaces", MODEL_SPACES[change["space"]]))
    ray_before = ray.is_initialized()  # the session's test Ray, if another test started it
    with pytest.raises(PreflightError, match=words.replace("-", r"\-").replace("[", r"\[").replace("]", r"\]")):
        preflight(settings(tmp_path, **change))
    assert [p for p in tmp_path.iterdir() if p.name != "spaces"] == []  # no tracking store, no storage folder
    assert ray.is_initialized() == ray_before  # pre-flight starts no Ray


def test_relative_paths_resolve_against_the_users_folder(tmp_path):
    s = resolve_paths(SweepSettings(space="wgan_clip", tracking_uri="sqlite:///runs/m.db", storage_path="out",
                                    dataset="parquet:data/x.parquet", data_root="~/d", inception_weights="w.pth"),
                      cwd=tmp_path)
    assert s.tracking_uri == f"sqlite:///{tmp_path}/runs/m.db"
    assert s.storage_path == str(tmp_path / "out") and s.dataset == f"parquet:{tmp_path}/data/x.parquet"
    assert s.data_root == str(Path("~/d").expanduser()) and s.inception_weights == str(tmp_path / "w.pth")
    absolute = resolve_paths(SweepSettings(space="x", tracking_uri="http://127.0.0.1:5000",
                                           storage_path="s3://b/p"), cwd=tmp_path)
    assert (absolute.tracking_uri, absolute.storage_path) == ("http://127.0.0.1:5000", "s3://b/p")


def test_the_sweep_script_exits_2_with_one_line_before_ray_starts(tmp_path):
    import subprocess

    proc = subprocess.run([sys.executable, str(REPO / "sweeps" / "wgan_clip.py"), "--preset", "smoke", "--dataset",
                           "imagenet", "--tracking-uri", f"sqlite:///{tmp_path}/m.db", "--storage-path",
                           str(tmp_path / "ray")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "'dataset' = 'imagenet'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.db").exists() and not (tmp_path / "ray").exists()


def test_a_budget_smaller_than_the_start_points_is_warned_of(tmp_path, capsys):
    preflight(settings(tmp_path, space="compare_losses", num_trials=2))
    assert "warning: --num-trials 2 runs the first 2 of the space's 4 start points" in capsys.readouterr().err
    preflight(settings(tmp_path, space="compare_losses", num_trials=4))
    assert "warning" not in capsys.readouterr().err


def test_preflight_names_a_missing_feature_extractor(tmp_path, monkeypatch):
    from test_features import _fake_mnist

    monkeypatch.setenv("GANLIB_CACHE", str(tmp_path / "cache"))  # no LeNet weights trained here
    _fake_mnist(tmp_path / "data")
    with pytest.raises(PreflightError, match=r"(?s)no feature extractor for dataset 'mnist'.*train_features mnist"):
        preflight(settings(tmp_path / "sweep", dataset="mnist", data_root=str(tmp_path / "data")))
    assert not (tmp_path / "sweep").exists()


# -- the plan ---------------------------------------------------------------------------------------
def test_rungs_are_tunes_own_and_are_checkpoints(tmp_path):
    space = load_space("wgan_clip")
    plan = plan_sweep(settings(tmp_path, preset="default"), space)
    bracket = plan.scheduler._brackets[0]  # noqa: SLF001 - Tune's own milestones, to compare with
    assert sorted(r for r, _ in bracket._rungs if r < 2000) == asha_rungs(100, 2000, 8) == [100, 800]
    assert plan.checkpoint_steps == (100, 800) and plan.metric == "objective"
    hyperband = plan_sweep(settings(tmp_path, preset="default", scheduler="hyperband"), space)
    for b in hyperband.scheduler._brackets:  # noqa: SLF001 - every bracket prunes within the budget
        milestones = [r for r, _ in b._rungs if r < 2000]
        assert milestones and set(milestones) <= set(hyperband.checkpoint_steps)
    later = plan_sweep(settings(tmp_path, preset="default", first_rung=800), space)  # for slow starters
    later_bracket = later.scheduler._brackets[0]  # noqa: SLF001
    assert sorted(r for r, _ in later_bracket._rungs if r < 2000) == asha_rungs(800, 2000, 5) == [800]
    assert later.checkpoint_steps == (800,)
    before = plan_sweep(settings(tmp_path, preset="default", first_rung=500, rung_reduction=2), space)
    assert before.checkpoint_steps == (500, 1000)  # the schedule the studies in docs/studies ran with
    assert before.description.startswith("ASHA: reduction 2, rungs at steps 500, 1000")
    pbt = plan_sweep(settings(tmp_path, scheduler="pbt", num_trials=4, max_concurrent=4), space)
    assert pbt.metric == "score" and pbt.log_hparams and len(pbt.population) == 4
    for preset in ("smoke", "default"):  # a preset's --max-concurrent 2 is a search's limit, not PBT's
        population = settings(tmp_path, preset=preset, scheduler="pbt")
        assert population.max_concurrent is None
        pbt = plan_sweep(population, space)
        assert pbt.search_alg.max_concurrent == population.num_trials == len(pbt.population)


def test_pbt_explores_inside_the_space_with_its_own_seed():
    space = load_space("wgan_gp_lambda")
    configs = [{**space.fixed, **c} for c in space.sample_configs(20, seed=1)]
    explorer = SpaceExplorer(space, seed=3)
    explored = [explorer(dict(c, gp_lambda=100.0, beta2=0.999, lr_g=1e-2)) for c in configs for _ in range(20)]
    for config in explored:  # 400 perturbations at the edges of the box: every one valid and inside
        GanConfig.from_dict(config)
        for p in space.params:
            assert p.low <= config[p.name] <= p.high, (p.name, config[p.name])
    assert any(c["gp_lambda"] < 100.0 for c in explored) and any(c["beta2"] < 0.999 for c in explored)
    again = SpaceExplorer(space, seed=3)
    assert [again(dict(c, gp_lambda=100.0, beta2=0.999, lr_g=1e-2)) for c in configs for _ in range(20)] == explored
    clip = load_space("wgan_clip")
    rmsprop = {**clip.fixed, "clip": 0.5, "n_critic": 10, "lr_g": 1e-3, "lr_d": 1e-3, "optimizer": "rmsprop"}
    for _ in range(50):  # conditions hold: no adam betas appear, the optimizer is never mutated
        out = SpaceExplorer(clip, seed=_)(rmsprop)
        assert "beta1" not in out and out["optimizer"] == "rmsprop" and 1 <= out["n_critic"] <= 10


# -- sweeps -----------------------------------------------------------------------------------------
def _probe_space(tmp_path) -> str:
    """Minimax GANs: one sane, one with a far too strong discriminator that saturates, one slow."""
    return write_space(tmp_path, {
        "name": "collapse_probe",
        "fixed": {"loss": "gan_minimax", "collapse": {"saturation_patience": 2}},
        "params": {"lr_d": {"type": "loguniform", "low": 1e-5, "high": 1e-1},
                   "lr_g": {"type": "loguniform", "low": 1e-5, "high": 1e-1},
                   "n_critic": {"type": "int", "low": 1, "high": 10}},
        "start": [{"lr_d": 2e-4, "lr_g": 2e-4, "n_critic": 1}, {"lr_d": 1e-2, "lr_g": 1e-5, "n_critic": 10}],
    })


def test_pbt_perturbs_a_bounded_linear_value_inside_its_range_not_onto_its_ends(tmp_path):
    # beta2 in [0.9, 0.999] from 0.95: x0.8 / x1.2 lands on a bound every time; -+0.2 of the
    # range does not. beta1 = 0 (WGAN-GP's start) moves, not only when resampled
    space = load_space("wgan_gp_lambda")
    explorer = SpaceExplorer(space, seed=0)
    start = {**space.fixed, **space.start_points()[0], "beta2": 0.95}
    explored = [explorer(dict(start)) for _ in range(400)]
    perturbed = [c["beta2"] for c in explored if c["beta2"] in (0.95 - 0.0198, 0.95 + 0.0198) or
                 abs(abs(c["beta2"] - 0.95) - 0.2 * 0.099) < 1e-12]
    assert len(perturbed) > 200 and sum(c["beta2"] in (0.9, 0.999) for c in explored) < 10
    assert sum(c["beta1"] != 0.0 for c in explored) > 0.45 * len(explored)  # was the resamples' 0.25
    # a condition naming an alias: the clip value is explored where the aliased norm says so
    path = tmp_path / "aliased.yaml"
    path.write_text(yaml.safe_dump({"name": "aliased", "fixed": {"loss": "wgan", "optimizer": "rmsprop"}, "params": {
        "norm_clip": {"type": "categorical", "choices": ["none", "layer"], "field": "d_norm"},
        "clip": {"type": "loguniform", "low": 1e-3, "high": 1.0, "when": {"norm_clip": "layer"}}}}, sort_keys=False))
    aliased = load_space(str(path))
    config = {"loss": "wgan", "optimizer": "rmsprop", "d_norm": "layer", "clip": 0.01}
    assert sum(SpaceExplorer(aliased, seed=i)(config)["clip"] != 0.01 for i in range(50)) > 40
    # a stepped value snapped onto its grid stays inside the range (0.95 + 1e-16 before)
    from ganlib.spaces import Param

    momentum = Param("momentum", "uniform", 0.0, 0.95, 0.05, False)
    assert SpaceExplorer._clip(momentum, 0.951) <= 0.95 and SpaceExplorer._clip(momentum, 0.951) == pytest.approx(0.95)


def test_a_sweep_logs_children_verdicts_the_searchers_record_and_the_report(local_ray, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative store and storage: they land here, not in trial folders
    config = settings(tmp_path, space=_probe_space(tmp_path), num_trials=3, steps=60, eval_every=10,
                      scheduler="none", max_concurrent=2, tracking_uri="sqlite:///rel/mlflow.db", storage_path="rel")
    summary = run_sweep(config)
    assert (tmp_path / "rel" / "mlflow.db").exists() and (tmp_path / "rel" / "t").is_dir()

    client, parents, children = mlflow_runs(config)
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert summary["parent_run_id"] == parent.info.run_id
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep_state"] == "finished"
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["status"] in ("completed", "stopped_early", "stalled", "collapsed")
        assert child.info.run_name.startswith("gan_minimax lr_d=")  # named for what it is
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "loss_d")]
        assert steps and len(steps) == len(set(steps))  # one value per step
        assert {a.path for a in client.list_artifacts(child.info.run_id)} >= {"checkpoint", "samples"}
        assert child.data.params["loss"] == "minimax" and child.data.params["constraint"] == "none"

    collapsed = [c for c in children if c.data.params["lr_d"] == "0.01"]
    assert len(collapsed) == 1 and collapsed[0].data.tags["status"] == "collapsed"
    assert "saturated" in collapsed[0].data.tags["reason"]
    assert max(m.step for m in client.get_metric_history(collapsed[0].info.run_id, "loss_d")) < 60

    told = {round(t["lr_d"], 6): t for t in json.loads(_artifact(client, parent, "report/optuna_trials.json"))}
    healthy_values = [t["value"] for k, t in told.items() if k != 0.01]
    assert told[0.01]["state"] == "COMPLETE" and told[0.01]["value"] > 1000 * max(healthy_values)  # the penalty
    assert all(v < 1000 for v in healthy_values)  # a healthy trial is told its best score

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/trials.parquet", "report/trials.csv", "report/best_config.json", "report/summary.json",
            "report/w1_vs_lr_d.png"} <= artifacts
    assert summary["primary"] == "w1" and summary["searched"] == ["lr_d", "lr_g", "n_critic"]
    best = summary["best"]
    assert best["config"]["lr_d"] != 0.01 and best["status"] in ("completed", "stalled", "stopped_early")
    work = summary["work"]
    assert work["done"]["collapsed"]["trials"] == 1 and "collapse" in work["saved"]
    assert work["total_done"]["critic_steps"] >= work["total_done"]["generator_steps"]


def _artifact(client, run, path: str) -> str:
    local = client.download_artifacts(run.info.run_id, path)
    return Path(local).read_text()


def _prune_space(tmp_path) -> str:
    """WGAN-GP trials that learn fast or hardly at all: a rung can tell them apart."""
    fast = {"lr_g": 1e-2, "lr_d": 1e-2}
    slow = {"lr_g": 1e-5, "lr_d": 1e-5}
    return write_space(tmp_path, {
        "name": "prune_probe", "fixed": {"loss": "wgan_gp", "gp_lambda": 0.1, "beta1": 0.5, "beta2": 0.9},
        "params": {"lr_g": {"type": "loguniform", "low": 1e-5, "high": 1e-2},
                   "lr_d": {"type": "loguniform", "low": 1e-5, "high": 1e-2}},
        "start": [fast, fast, slow, slow, slow, slow]})


@pytest.mark.parametrize("scheduler", ["asha", "hyperband"])
def test_every_early_stopping_scheduler_prunes(local_ray, tmp_path, scheduler):
    config = settings(tmp_path, space=_prune_space(tmp_path), scheduler=scheduler, num_trials=6, steps=90,
                      eval_every=10, max_concurrent=1)
    summary = run_sweep(config)
    assert summary["by_status"].get("stopped_early", 0) >= 1, summary["by_status"]
    stopped = [r for r in summary["work"]["saved"].items() if r[0] == "scheduler"]
    assert stopped and stopped[0][1]["generator_steps"] > 0


def test_pbt_exploits_within_the_space_and_logs_the_config_it_runs(local_ray, tmp_path):
    config = settings(tmp_path, space="wgan_gp_lambda", scheduler="pbt", num_trials=4, max_concurrent=4, steps=40,
                      eval_every=10, cpus_per_trial=0.5)
    run_sweep(config)
    client, _, children = mlflow_runs(config)
    space = load_space("wgan_gp_lambda")
    assert len(children) == 4
    exploited = 0
    # Read from MLflow, where the driver logs every result: after an exploit Tune's own result.json
    # can lose rows (ExperimentAnalysis then returns an empty frame for that trial).
    for child in children:
        def history(key, run_id=child.info.run_id):
            return {m.step: m.value for m in client.get_metric_history(run_id, key)}

        live, configured = history("opt_lr_d"), history("hp_lr_d")
        assert live and live == configured  # the live optimizer runs the config's value, step by step
        for p in space.params:
            assert all(p.low <= v <= p.high for v in history(f"hp_{p.name}").values())
        exploited += len(set(configured.values())) > 1
    assert exploited >= 1  # a trial was cut and continued from a better one, under new values
    changed = [c for c in children if "config_changed_at" in c.data.tags]
    assert len(changed) >= 1
    run_id = changed[0].info.run_id
    assert len({m.value for m in client.get_metric_history(run_id, "hp_lr_d")}) > 1
    assert any(a.path.startswith("config/step_") for a in client.list_artifacts(run_id, "config"))


def failing_trial(config, data=None, extractor=None):
    raise RuntimeError("this trial always fails")


def test_a_sweep_whose_trials_all_error_fails_and_says_so(local_ray, tmp_path, monkeypatch):
    import ray

    import ganlib.tune

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests
    monkeypatch.setattr(ganlib.tune, "train_gan", failing_trial)
    try:
        with pytest.raises(SweepFailed) as err:
            run_sweep(settings(tmp_path, num_trials=2, max_failures=0))
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert err.value.summary["by_status"] == {"error": 2} and "best" not in err.value.summary
    _, [parent], children = mlflow_runs(settings(tmp_path))
    assert parent.info.status == "FAILED" and parent.data.tags["sweep_state"] == "failed"
    assert {c.data.tags["status"] for c in children} == {"error"}


def test_resume_refuses_what_cannot_be_resumed(local_ray, tmp_path, monkeypatch):
    with pytest.raises(PreflightError, match="there is no sweep to resume"):
        run_sweep(settings(tmp_path, resume=True))  # no store at all
    run_sweep(settings(tmp_path, num_trials=1, steps=10, eval_every=10))
    with pytest.raises(PreflightError, match="there is no sweep named 'other'"):
        run_sweep(settings(tmp_path, num_trials=1, steps=10, eval_every=10, name="other", resume=True))
    with pytest.raises(PreflightError, match="sweep 't' finished: nothing to resume"):
        run_sweep(settings(tmp_path, resume=True))
    with pytest.raises(PreflightError, match="a sweep of that name already exists"):
        run_sweep(settings(tmp_path, num_trials=1))
    # an unfinished sweep resumed with other settings than it started with: Tune would restore its
    # trials as they began while the driver reported and confirmed with the new ones
    client, [parent], _ = mlflow_runs(settings(tmp_path))
    client.set_tag(parent.info.run_id, "sweep_state", "interrupted")
    with pytest.raises(PreflightError, match=r"'t' was started with other settings: --num-trials 1 \(given: 4\), "
                                             r"--steps 10 \(given: 40\), --seed 0 \(given: 3\); resume it with"):
        run_sweep(settings(tmp_path, resume=True, seed=3))
    with pytest.raises(PreflightError, match=r"--rung-reduction unset \(given: 3\)"):
        run_sweep(settings(tmp_path, num_trials=1, steps=10, eval_every=10, rung_reduction=3, resume=True))
    # where it runs may change (here the CPUs a trial asks for): it resumes, shown running again
    # in the runs table while it does (not KILLED, as the interrupted sweep left it), and finishes
    import ganlib.sweep

    client.set_terminated(parent.info.run_id, "KILLED")
    seen, run_tune = [], ganlib.sweep._run_tune
    monkeypatch.setattr(ganlib.sweep, "_run_tune", lambda *a, **kw: seen.append(client.get_run(
        parent.info.run_id)) or run_tune(*a, **kw))
    run_sweep(settings(tmp_path, num_trials=1, steps=10, eval_every=10, cpus_per_trial=0.5, resume=True))
    assert [(r.info.status, r.data.tags["status"]) for r in seen] == [("RUNNING", "running")]
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    assert mlflow_runs(settings(tmp_path))[1][0].data.tags["sweep_state"] == "finished"


def test_resume_without_a_name_continues_the_latest_unfinished_sweep_not_the_latest_one(tmp_path):
    from ganlib.sweep import _check_resumable, _resume_target
    from ganlib.tracking import client_for, get_or_create_experiment, start_sweep_run

    space = load_space("wgan_clip")
    client = client_for(settings(tmp_path).tracking_uri)
    experiment_id = get_or_create_experiment(client, settings(tmp_path).experiment)
    for name, state in (("older-finished", "finished"), ("interrupted", "interrupted"), ("newest", "finished")):
        run_id = start_sweep_run(client, experiment_id, settings(tmp_path, name=name), space, "plan")
        client.set_tag(run_id, "sweep_state", state)
    unnamed = settings(tmp_path, name=None, resume=True)
    with pytest.raises(PreflightError, match="sweep 'interrupted' has no Tune state"):
        _check_resumable(unnamed, _resume_target(unnamed, client, experiment_id))  # not 'newest', which finished
    client.set_tag(client.search_runs([experiment_id], "tags.sweep_name = 'interrupted'")[0].info.run_id,
                   "sweep_state", "finished")
    with pytest.raises(PreflightError, match="there is no sweep of 'wgan_clip-ring8' left unfinished"):
        _resume_target(settings(tmp_path, name=None, resume=True), client, experiment_id)


def test_resume_refuses_a_sweep_whose_driver_still_runs(local_ray, tmp_path, capsys):
    """``--resume`` continues the latest unfinished sweep, easily one still running in another
    terminal: two drivers would run its trials twice. The parent run records its driver (host,
    PID, start time); on that host the check is exact. Here the recorded driver is a live process
    (a ``sleep``), then the same process ended, then a driver on another host (not checkable:
    a warning)."""
    import subprocess

    from ganlib.driver import identity, still_running

    run_sweep(settings(tmp_path, num_trials=1, steps=10, eval_every=10))
    client, [parent], _ = mlflow_runs(settings(tmp_path))
    assert still_running(parent.data.tags["driver"]) is True  # its driver: this test's own process
    driver = subprocess.Popen(["sleep", "300"])
    try:
        client.set_tag(parent.info.run_id, "sweep_state", "running")  # as a live (or SIGKILLed) driver leaves it
        recorded = identity(driver.pid)
        client.set_tag(parent.info.run_id, "driver", recorded)
        assert still_running(recorded) is True
        with pytest.raises(PreflightError, match=rf"'t' is still running: its driver, PID {driver.pid} on this"):
            run_sweep(settings(tmp_path, num_trials=1, steps=10, eval_every=10, resume=True))
    finally:
        driver.kill()
        driver.wait()
    assert still_running(recorded) is False
    run_sweep(settings(tmp_path, num_trials=1, steps=10, eval_every=10, resume=True))  # the driver is gone
    client, [parent], _ = mlflow_runs(settings(tmp_path))
    assert parent.data.tags["sweep_state"] == "finished" and still_running(parent.data.tags["driver"]) is True

    client.set_tag(parent.info.run_id, "sweep_state", "running")
    client.set_tag(parent.info.run_id, "driver", "another-host 4242 123456")
    capsys.readouterr()
    run_sweep(settings(tmp_path, num_trials=1, steps=10, eval_every=10, resume=True))
    assert "was last driven from another-host (PID 4242), which cannot be checked from here" in capsys.readouterr().err
    assert still_running("another-host 4242 123456") is None and still_running("not an identity") is None
    client.set_tag(parent.info.run_id, "sweep_state", "running")
    client.set_tag(parent.info.run_id, "driver", "garbage")  # not an identity: the same warning, no crash
    run_sweep(settings(tmp_path, num_trials=1, steps=10, eval_every=10, resume=True))
    assert "was last driven from garbage (PID ?)" in capsys.readouterr().err


def test_a_sweep_claimed_by_a_live_driver_process_is_refused_and_freed_when_it_dies(tmp_path, monkeypatch, capsys):
    """The claim is an flock held by the driver's process: another process on the host cannot
    take it, for a new sweep of that name or a resume, and it is free as soon as the holder dies,
    however it dies (SIGKILL here), with nothing to clean up."""
    import subprocess
    import sys

    from ganlib.driver import Claim, SweepClaimed
    from ganlib.tracking import client_for, get_or_create_experiment, start_sweep_run

    held = settings(tmp_path, name="held")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; from ganlib.driver import Claim; c = Claim(sys.argv[1]); print('held', flush=True); "
        "sys.stdin.read()"), held.experiment_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(SweepClaimed, match=f" {holder.pid} "):
            Claim(held.experiment_path)
        Claim(settings(tmp_path, name="other").experiment_path).release()  # another sweep is free
        with pytest.raises(PreflightError, match=rf"sweep 'held' is being driven by another process on this "
                                                 rf"machine \(PID {holder.pid}\)"):
            run_sweep(settings(tmp_path, name="held", num_trials=1))  # a new sweep of that name
        client = client_for(held.tracking_uri)
        run_id = start_sweep_run(client, get_or_create_experiment(client, held.experiment), held,
                                 load_space("wgan_clip"), "plan")
        client.set_tag(run_id, "sweep_state", "interrupted")
        with pytest.raises(PreflightError, match=rf"\(PID {holder.pid}\)"):
            run_sweep(settings(tmp_path, name=None, resume=True))  # its resume, found by base name
    finally:
        holder.kill()
        holder.wait()
    # free once its holder is gone: the resume goes on to its own checks (this one has no Tune state)
    with pytest.raises(PreflightError, match="sweep 'held' has no Tune state"):
        run_sweep(settings(tmp_path, name=None, resume=True))
    Claim(held.experiment_path).release()
    # no folder for claims (here a file stands where it would be): said, and the sweep goes on unguarded
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("GANLIB_DRIVER_CLAIMS", str(tmp_path / "a-file" / "claims"))
    capsys.readouterr()
    with pytest.raises(PreflightError, match="sweep 'held' has no Tune state"):
        run_sweep(settings(tmp_path, name=None, resume=True))
    assert "warning: could not claim sweep 'held' for this driver" in capsys.readouterr().err


def test_a_resume_whose_tune_state_cannot_be_restored_fails_before_any_trial(local_ray, tmp_path):
    """Tune 2.60 catches an exception while it restores, logs it, and runs the experiment afresh:
    here its restored searcher has nothing left to run, so the "resumed" sweep would write an empty
    report, and a state file with no trials over the sweep's. The sweep's logger is the callback
    that notices (Tune never gave it its saved state): the resume fails, naming Tune's error, before
    any trial starts, and Tune's state is left as it was for the next try."""
    from ray import cloudpickle

    from ganlib.sweep import main
    from ganlib.tune_state import RestoreFailed

    config = settings(tmp_path, num_trials=2, steps=10, eval_every=10, confirm_top=0)
    run_sweep(config)
    client, [parent], children = mlflow_runs(config)
    client.set_tag(parent.info.run_id, "sweep_state", "interrupted")  # as a killed sweep leaves it
    path = Path(config.experiment_path)
    session = sorted(p.name for p in path.glob("experiment_state-*.json"))[-1]
    damaged = path / f"callback-states-{session.removeprefix('experiment_state-').removesuffix('.json')}.pkl"
    assert damaged.exists()
    # readable, so not set aside as truncated; but not the state CallbackList.set_state expects
    damaged.write_bytes(cloudpickle.dumps(["not", "a", "dict"]))

    def state():  # every file but the marker Tune writes to probe the storage path
        return {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.name != ".validate_storage_marker"}

    on_disk = state()

    resumed = settings(tmp_path, num_trials=2, steps=10, eval_every=10, confirm_top=0, resume=True)
    with pytest.raises(RestoreFailed, match=r"search stage .*AttributeError: 'list' object has no attribute 'get'"):
        run_sweep(resumed)
    assert state() == on_disk  # nothing saved over it
    client, [parent], after = mlflow_runs(config)
    assert parent.info.status == "FAILED" and parent.data.tags["sweep_state"] == "crashed"
    assert "RestoreFailed" in parent.data.tags["sweep_end_reason"]
    assert sorted(c.info.run_id for c in after) == sorted(c.info.run_id for c in children)  # no new trial

    argv = ["--space", "wgan_clip", "--preset", "smoke", "--tracking-uri", config.tracking_uri, "--storage-path",
            config.storage_path, "--device", "cpu", "--name", "t", "--num-trials", "2", "--steps", "10",
            "--eval-every", "10", "--confirm-top", "0", "--resume"]
    assert main(argv) == 1  # the command line: one error line (printed), exit 1
    assert state() == on_disk
    # the damaged file moved away, the resume goes on: in this long-lived Ray session Tune had
    # copied it into the driver's staging folder, and would read that copy again if it were kept
    damaged.rename(tmp_path / "damaged.pkl")  # the session's other files are whole: restored without it
    assert main(argv) == 0
    _, [parent], after = mlflow_runs(config)
    assert parent.info.status == "FINISHED" and len(after) == 2


def test_a_confirmation_killed_before_tune_saved_its_state_runs_again_on_resume(local_ray, tmp_path):
    """The driver was killed as the confirmation stage began: its Tune run has a tuner.pkl and no
    experiment state. The resume runs the stage again (Tune's restore would fail on every try),
    and the killed session's child runs are not kept beside the new ones."""
    config = settings(tmp_path, num_trials=2, steps=10, eval_every=10, confirm_top=1, confirm_seeds=2)
    run_sweep(config)
    client, [parent], children = mlflow_runs(config)
    confirm = Path(f"{config.experiment_path}-confirm")
    for state in confirm.glob("*-*.*"):
        if state.is_file():
            state.unlink()  # every state file of the stage's only session: never saved
    assert (confirm / "tuner.pkl").exists()
    client.set_tag(parent.info.run_id, "sweep_state", "interrupted")
    summary = run_sweep(settings(tmp_path, num_trials=2, steps=10, eval_every=10, confirm_top=1, confirm_seeds=2,
                                 resume=True))
    assert [row["seeds"] for row in summary["confirmation"]["rows"]] == [2]
    _, [parent], after = mlflow_runs(config)
    assert parent.data.tags["sweep_state"] == "finished"
    assert sum(c.data.tags["stage"] == "confirm" for c in after) == 2 and len(after) == len(children)


def test_the_loss_constraint_normalisation_grid_runs_as_one_sweep(local_ray, tmp_path):
    config = settings(tmp_path, space="loss_penalty_norm", num_trials=4, scheduler="none", max_concurrent=2)
    summary = run_sweep(config)
    assert summary["searched"][:3] == ["loss", "constraint", "d_norm"]
    _, _, children = mlflow_runs(config)
    combos = {(c.data.params["loss"], c.data.params["constraint"], c.data.params["d_norm"]) for c in children}
    # the start points: DCGAN-style NS GAN, WGAN-GP, NS + GP, NS + spectral norm
    assert combos == {("non_saturating", "none", "none"), ("wasserstein", "gp", "none"),
                      ("non_saturating", "gp", "none"), ("non_saturating", "none", "spectral")}
    names = sorted(c.info.run_name for c in children)
    assert any(n.startswith("wgan_gp ") for n in names) and any("norm=spectral" in n for n in names)


def test_the_public_api_and_the_console_command():
    import subprocess

    import ganlib

    assert {"GanConfig", "Trainer", "train", "load_space", "Evaluator", "evaluate_checkpoint",
            "run_sweep", "train_cohort", "CohortTrainer"} <= set(ganlib.__all__)
    assert callable(ganlib.train_cohort) and ganlib.CohortTrainer.__name__ == "CohortTrainer"
    assert ganlib.GanConfig.create(loss="wgan").clip == 0.01
    code = ("import sys, ganlib; assert 'torch' not in sys.modules and 'ray' not in sys.modules;"
            "ganlib.GanConfig; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    command = Path(sys.executable).parent / "ganlib-sweep"
    proc = subprocess.run([str(command), "wgan_clip", "--num-trials", "0"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip() == \
        "error: --num-trials = 0 is invalid: allowed an integer >= 1"
