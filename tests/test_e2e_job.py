"""End to end as a user runs it: `ray job submit -- python sweeps/wgan_clip.py` against a real
Ray head, logging to a real MLflow tracking server; both started and stopped by PID through
infra/local/ray-head.sh and infra/local/mlflow-server.sh."""

import subprocess
from pathlib import Path

from mlflow.tracking import MlflowClient
from servers import BIN, group_alive, mlflow_server, ray_head, sweep_runs

REPO = Path(__file__).resolve().parent.parent


def test_ray_job_submit_wgan_clip_smoke_sweep(tmp_path):
    # no --storage-path: the job inherits the head's GANLIB_STORAGE_PATH (ray-head.sh sets it to the
    # repo's ray_results by default), not its working-dir copy's folder in Ray's temporary files
    storage = tmp_path / "ray_results"
    with mlflow_server(tmp_path) as (tracking_uri, mlflow_pid, _), \
            ray_head(tmp_path, GANLIB_STORAGE_PATH=str(storage)) as (dashboard, ray_pid, ray_env):
        proc = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", dashboard, "--working-dir", str(REPO), "--",
             "python", "sweeps/wgan_clip.py", "--preset", "smoke", "--num-trials", "2", "--device", "cpu",
             "--tracking-uri", tracking_uri],
            capture_output=True, text=True, timeout=900, env=ray_env, cwd=REPO)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "succeeded" in output, output[-6000:]
        assert "Sweep 'wgan_clip-ring8-" in proc.stdout and "' finished in " in proc.stdout
        assert list(storage.glob("wgan_clip-ring8-*/tuner.pkl"))  # the head's storage, not Ray's temp copy

        client = MlflowClient(tracking_uri)
        parent, children = sweep_runs(tracking_uri)
        assert len(children) == 2
        for child in children:
            assert (child.data.params["loss"], child.data.params["constraint"]) == ("wasserstein", "clip")
            assert "clip" in child.data.params and child.info.run_name.startswith("wgan c=")
            assert child.data.tags["status"] in ("completed", "stopped_early", "collapsed", "diverged")
            assert client.get_metric_history(child.info.run_id, "loss_d")
        # artifacts went through the server's proxy into its artifact folder
        assert any((tmp_path / "artifacts").rglob("trials.parquet"))
    for pid in (mlflow_pid, ray_pid):  # both servers are gone, with every process of their groups
        assert not group_alive(pid)

