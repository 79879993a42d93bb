"""Sweeps in-process on local Ray with a local MLflow store: runs, verdicts, searcher feedback."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ganlib.sweep import PreflightError, SweepSettings, preflight, run_sweep

REPO = Path(__file__).resolve().parent.parent


def settings(tmp_path, **kw):
    values = dict(space="wgan_clip", preset="smoke", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                  storage_path=str(tmp_path / "ray"), device="cpu")
    return SweepSettings(**{**values, **kw})


@pytest.mark.parametrize("change, words", [
    (dict(space="no_such_space"), "no_such_space"),
    (dict(num_trials=0), "--num-trials = 0"),
    (dict(gpus_per_trial=-1.0), "--gpus-per-trial"),
    (dict(dataset="mnist"), "data_root"),
    (dict(steps=0), "'steps' = 0"),
    (dict(eval_every=0), "--eval-every = 0"),
    (dict(tracking_uri="http://127.0.0.1:9/"), "not reachable"),
    (dict(storage_path="/dev/null/ray"), "not writable"),
])
def test_preflight_errors_are_clear_and_leave_nothing_behind(tmp_path, change, words):
    with pytest.raises(PreflightError, match=words.replace("-", r"\-")):
        preflight(settings(tmp_path, **change))
    assert list(tmp_path.iterdir()) == []  # no tracking store, no storage folder


def test_sweep_script_exits_2_with_one_line_before_ray_starts(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "sweeps" / "wgan_clip.py"), "--preset", "smoke", "--dataset",
                           "imagenet", "--tracking-uri", f"sqlite:///{tmp_path}/m.db", "--storage-path",
                           str(tmp_path / "ray")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "'dataset' = 'imagenet'" in proc.stderr
    assert not (tmp_path / "m.db").exists() and not (tmp_path / "ray").exists()


def _collapse_space(tmp_path) -> Path:
    """Two minimax GANs: one sane, one with a far too strong discriminator that saturates."""
    space = {
        "name": "collapse_probe",
        "fixed": {"loss": "gan_minimax", "collapse": {"saturation_patience": 2}},
        "params": {"lr_d": {"type": "loguniform", "low": 1e-5, "high": 1e-1},
                   "lr_g": {"type": "loguniform", "low": 1e-5, "high": 1e-1},
                   "n_critic": {"type": "int", "low": 1, "high": 10}},
        "start": [{"lr_d": 2e-4, "lr_g": 2e-4, "n_critic": 1}, {"lr_d": 1e-2, "lr_g": 1e-5, "n_critic": 10}],
    }
    path = tmp_path / "collapse_probe.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def test_smoke_sweep_logs_parent_children_and_tells_optuna_the_penalty(local_ray, tmp_path):
    from mlflow.tracking import MlflowClient

    config = settings(tmp_path, space=str(_collapse_space(tmp_path)), num_trials=3, steps=60, eval_every=10,
                      scheduler="none", max_concurrent=2)
    summary = run_sweep(config)

    client = MlflowClient(config.tracking_uri)
    experiment = client.get_experiment_by_name(config.experiment)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("ganlib_role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 3
    parent_id = parents[0].info.run_id
    assert summary["parent_run_id"] == parent_id
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent_id}
    for child in children:
        assert child.data.tags["status"] in ("completed", "stopped_early", "collapsed", "diverged")
        assert len(client.get_metric_history(child.info.run_id, "loss_d")) >= 1
        assert client.list_artifacts(child.info.run_id)  # samples plot and/or generator checkpoint
        assert child.data.params["loss"] == "gan_minimax"

    collapsed = [c for c in children if c.data.params["lr_d"] == "0.01"]
    assert len(collapsed) == 1 and collapsed[0].data.tags["status"] == "collapsed"
    assert "saturated" in collapsed[0].data.tags["reason"]
    history = client.get_metric_history(collapsed[0].info.run_id, "loss_d")
    assert max(m.step for m in history) < 60  # stopped before its budget

    told = {round(t["lr_d"], 6): t for t in summary["optuna_trials"]}
    assert told[0.01]["state"] == "COMPLETE" and told[0.01]["value"] == 1e3  # the finite penalty

    artifacts = {a.path for a in client.list_artifacts(parent_id, "report")}
    assert {"report/trials.parquet", "report/trials.csv", "report/best_config.json"} <= artifacts
    assert "report/w1_vs_lr_d.png" in artifacts
    assert summary["primary"] == "w1" and summary["searched"] == ["lr_d", "lr_g", "n_critic"]
    assert summary["best"]["config"]["lr_d"] != 0.01


def test_preflight_names_a_missing_feature_extractor(tmp_path, monkeypatch):
    from test_features import _fake_mnist

    monkeypatch.setenv("GANLIB_CACHE", str(tmp_path / "cache"))  # no LeNet weights trained here
    _fake_mnist(tmp_path / "data")
    with pytest.raises(PreflightError, match=r"(?s)no feature extractor for dataset 'mnist'.*train_features mnist"):
        preflight(settings(tmp_path / "sweep", dataset="mnist", data_root=str(tmp_path / "data")))
    assert not (tmp_path / "sweep").exists()


def test_pbt_exploit_applies_the_restoring_trials_learning_rates(local_ray, tmp_path):
    """Under PBT an exploited trial restarts from a donor's checkpoint with mutated values; the
    learning rates live in its optimizers must be its own config's from the first step after
    the restore (Ray's DCGAN PBT example only applies them after the next exploit)."""
    config = settings(tmp_path, scheduler="pbt", num_trials=4, steps=40, eval_every=10, max_concurrent=4)
    run_sweep(config)
    from ray.tune import ExperimentAnalysis

    histories = ExperimentAnalysis(f"{config.storage_path}/{config.name}").trial_dataframes.values()
    assert len(histories) == 4
    perturbed = 0
    for df in histories:
        assert (df["opt_lr_d"] == df["config/lr_d"]).all() and (df["opt_lr_g"] == df["config/lr_g"]).all()
        perturbed += df["config/lr_d"].nunique() > 1
    assert perturbed >= 1  # at least one trial was exploited and continued under new values
