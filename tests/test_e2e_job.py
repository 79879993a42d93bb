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


def test_a_joined_cluster_without_a_node_for_one_trial_is_warned_of_at_the_start(tmp_path):
    """Tune leaves trials no node can place PENDING, warning only after 60 s amid its output;
    whether an autoscaler will add a node that fits, the driver cannot tell. So the sweep says at
    the start what is missing, before Tune runs. A head of 1 CPU, trials of 2."""
    import signal
    import threading
    import time

    from ganlib.cluster import no_node_fits

    with ray_head(tmp_path, num_cpus=1) as (_, _, ray_env):
        proc = subprocess.Popen(
            [str(BIN / "python"), "sweeps/wgan_clip.py", "--preset", "smoke", "--num-trials", "1", "--device", "cpu",
             "--cpus-per-trial", "2", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
             "--storage-path", str(tmp_path / "ray_results")],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=ray_env, cwd=REPO)
        lines: list[str] = []

        def read() -> None:
            for line in proc.stderr:
                lines.append(line)

        threading.Thread(target=read, daemon=True).start()
        try:
            deadline = time.monotonic() + 180
            while not any(line.startswith("warning: no node") for line in lines):
                assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
                time.sleep(0.5)
        finally:
            proc.send_signal(signal.SIGINT)  # the trial would wait for ever
            proc.wait(timeout=120)
        [warning] = [line for line in lines if line.startswith("warning: no node")]
    assert warning.startswith("warning: no node of the cluster has the 2 CPUs and 0 GPUs of one trial")
    assert "the most any of its 1 nodes has is 1 CPUs and 0 GPUs" in warning
    # one bundle per trial: two nodes of 2 CPUs do not place a 3-CPU trial; dead nodes offer nothing
    two = [{"Alive": True, "Resources": {"CPU": 2.0}}] * 2
    assert no_node_fits(3, 0, two) and no_node_fits(2, 0, two) is None
    assert no_node_fits(1, 1, [*two, {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 1.0}}])
    assert no_node_fits(1, 0.5, [*two, {"Alive": True, "Resources": {"CPU": 4.0, "GPU": 1.0}}]) is None
