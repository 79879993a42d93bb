"""Autoscaling, locally: the node types of infra/ray/aws-gpu.yaml, scaled down, on Ray's fake
multinode provider (infra/ray/fake_cluster.py). A smoke sweep whose trials each ask for
{CPU: 1, GPU: 1} (a fake GPU resource) is submitted as a Ray job to a head that offers 0 CPUs
and starts with no worker; the real autoscaler must add `ray.worker.gpu` nodes, the trials must
run on them, the sweep must land in a real MLflow server, and the idle workers must be removed.

Everything is started here and stopped by PID (never `ray stop`): other Ray clusters on the
machine are left alone."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml
from servers import BIN, REPO, mlflow_server, sweep_runs

sys.path.insert(0, str(REPO / "infra" / "ray"))
from fake_cluster import (  # noqa: E402
    AWS_CONFIG,
    FAKE_CONFIG,
    FakeAutoscalingCluster,
    group_alive,
    group_pids,
    load_config,
    scaled_down,
)

HEAD_NODE_ID = "f" * 51 + "00000"  # the fake provider numbers its nodes: head 00000, workers 00001...


def _ray_json(cluster: FakeAutoscalingCluster, *args: str) -> list[dict]:
    proc = subprocess.run([str(BIN / "ray"), *args, "--format", "json", "--address", cluster.dashboard_url],
                          env=cluster.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if proc.stdout.startswith("No resource"):
        return []
    return json.loads(proc.stdout)


def _nodes(cluster) -> list[dict]:
    return _ray_json(cluster, "list", "nodes", "--detail", "--limit", "1000")


def _raylets(pgid: int) -> int:
    count = 0
    for pid in group_pids(pgid):
        try:
            count += Path(f"/proc/{pid}/comm").read_text().strip() == "raylet"
        except OSError:
            pass
    return count


def test_fake_cluster_is_the_launcher_config_scaled_down():
    """The fake cluster runs the AWS launcher's node types (names, head with no CPU, CPU and GPU
    worker types starting at 0), not a separate invented topology."""
    with open(AWS_CONFIG) as f:
        aws = yaml.safe_load(f)
    fake = FakeAutoscalingCluster()._config
    assert set(fake["available_node_types"]) == set(aws["available_node_types"])
    assert fake["head_node_type"] == aws["head_node_type"]
    assert fake["available_node_types"][fake["head_node_type"]]["resources"]["CPU"] == 0
    for name, node_type in aws["available_node_types"].items():
        if name == aws["head_node_type"]:
            continue
        scaled = fake["available_node_types"][name]
        assert scaled["min_workers"] == node_type["min_workers"] == 0
        assert set(scaled["resources"]) - {"object_store_memory"} == set(node_type["resources"])
        assert scaled["resources"]["CPU"] == 1 and scaled["resources"].get("GPU", 1) == 1
    assert fake["idle_timeout_minutes"] < 1 <= aws["idle_timeout_minutes"]
    # local-fake-multinode.yaml (the file for a manual `RAY_FAKE_CLUSTER=1 ray start`) says the same
    assert load_config(FAKE_CONFIG)["available_node_types"] == scaled_down(aws)["available_node_types"]


def test_sweep_scales_gpu_workers_up_and_down(tmp_path):
    storage = tmp_path / "ray_results"
    cluster = FakeAutoscalingCluster(log_dir=tmp_path / "cluster")
    with mlflow_server(tmp_path) as (tracking_uri, _, _):
        cluster.start()
        head_pid = cluster.pid
        try:
            # Zero workers at the start: the head alone, offering no CPU.
            deadline = time.time() + 60
            while not (nodes := _nodes(cluster)) and time.time() < deadline:
                time.sleep(1)
            [head] = nodes
            assert head["is_head_node"] and head["state"] == "ALIVE"
            assert head["resources_total"].get("CPU", 0) == 0
            assert _raylets(head_pid) == 1

            # No --working-dir: the fake nodes share this machine's session folder, and a worker's
            # runtime-env agent deletes the unpacked working_dir (the driver's cwd) once its
            # trial ends. The package is installed, as in the cluster images.
            started = time.time()
            proc = subprocess.run(
                [str(BIN / "ray"), "job", "submit", "--address", cluster.dashboard_url,
                 "--", "python", str(REPO / "sweeps" / "wgan_clip.py"), "--preset", "smoke", "--num-trials", "2",
                 "--device", "cpu", "--cpus-per-trial", "1", "--gpus-per-trial", "1", "--scheduler", "none",
                 "--name", "autoscale", "--tracking-uri", tracking_uri,
                 # A cluster of several nodes needs shared storage; the fake nodes share this
                 # machine's disk, which a file:// URI asserts (a plain path is refused there).
                 "--storage-path", storage.as_uri()],
                capture_output=True, text=True, timeout=900, env=cluster.env, cwd=REPO)
            output = proc.stdout + proc.stderr
            assert proc.returncode == 0 and "succeeded" in output, output[-6000:]
            assert "Sweep 'autoscale' finished" in output and "2 completed" in output, output[-6000:]
            # at the start no node could place a trial (a 0-CPU head, no worker yet): said, then scaled
            assert "warning: no node of the cluster has the 1 CPUs and 1 GPUs of one trial" in output, output[-6000:]
            print(f"sweep job: {time.time() - started:.0f} s")

            # The autoscaler added GPU workers (and nothing else: the trials need a GPU).
            nodes = _nodes(cluster)
            workers = {n["node_id"]: n for n in nodes if not n["is_head_node"]}
            assert workers, nodes
            for worker in workers.values():
                assert worker["resources_total"].get("GPU") == 1 and worker["resources_total"]["CPU"] == 1, worker
                assert worker["node_id"] != HEAD_NODE_ID
            print("workers:", {n: w.get("labels") for n, w in workers.items()})

            # Each trial ran on a worker: the pid it reported to Tune belongs to a trial actor
            # whose node is one of the autoscaled workers.
            results = [json.loads(line) for path in storage.rglob("result.json")
                       for line in path.read_text().splitlines() if line.strip()]
            trial_pids = {r["trial_id"]: r["pid"] for r in results}
            assert len(trial_pids) == 2, results
            actors = _ray_json(cluster, "list", "actors", "--detail", "--limit", "1000")
            node_of_pid = {a["pid"]: a["node_id"] for a in actors if "ImplicitFunc" in (a.get("class_name") or "")}
            trial_nodes = {trial: node_of_pid.get(pid) for trial, pid in trial_pids.items()}
            assert all(node in workers for node in trial_nodes.values()), (trial_nodes, list(workers))

            # The sweep's MLflow runs: a parent and one child per trial.
            parent, children = sweep_runs(tracking_uri)
            assert len(children) == 2
            assert {c.data.tags.get("ray_trial_id") for c in children} == set(trial_pids)

            # Idle workers leave after idle_timeout_minutes (12 s here): their nodes are DEAD
            # and their raylets are gone.
            deadline = time.time() + 120
            while time.time() < deadline:
                alive = [n for n in _nodes(cluster) if n["node_id"] in workers and n["state"] == "ALIVE"]
                if not alive and _raylets(head_pid) == 1:
                    break
                time.sleep(2)
            assert not alive, alive
            assert _raylets(head_pid) == 1
            print(f"scaled down after: {time.time() - started:.0f} s")
        finally:
            cluster.shutdown()
    assert not group_alive(head_pid)  # the whole cluster is gone, fake workers included
