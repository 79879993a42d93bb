"""Real local servers for the end-to-end tests, started and stopped through the project's own
scripts (infra/local/ray-head.sh, infra/local/mlflow-server.sh): bound to 127.0.0.1, state
and PID files in the test's folder, stopped by PID (never `ray stop`)."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOCAL = REPO / "infra" / "local"
sys.path.insert(0, str(REPO / "infra" / "ray"))
from fake_cluster import group_alive, group_pids  # noqa: E402,F401 - one /proc reader for every test


def sweep_runs(tracking_uri: str, experiment: str = "ganlib-wgan_clip"):
    """(parent run, child runs) of the one sweep logged in ``experiment``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("ganlib_role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, children


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(run_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of the scripts: this interpreter's ray / mlflow, state under run_dir."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0",
           "MLFLOW_DISABLE_TELEMETRY": "true", "GANLIB_PYTHON": sys.executable, "GANLIB_RUN_DIR": str(run_dir)}
    for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI"):  # nothing inherited by chance
        env.pop(key, None)
    env.update(extra)
    return env


def read_env_file(path: Path) -> dict[str, str]:
    """The `export K=V` lines a start script writes for its clients."""
    values = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            values[key] = shlex.split(value)[0] if value else ""
    return values


def pidfile_pid(path: Path) -> int:
    """The PID of a server script's PID file ("PID STARTTIME SERVER_ID")."""
    return int(path.read_text().split()[0])


def run_script(script: str, action: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(LOCAL / script), action], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _checked(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        raise RuntimeError(f"{proc.args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@contextmanager
def mlflow_server(folder: Path, **settings: str):
    """infra/local/mlflow-server.sh with a SQLite store and proxied artifacts under ``folder``,
    one worker. Yields (tracking URI, PID, client env)."""
    run_dir = folder / "run"
    env = base_env(run_dir, MLFLOW_PORT=str(free_port()), MLFLOW_WORKERS="1",
                   MLFLOW_BACKEND_STORE_URI=f"sqlite:///{folder}/mlflow.db",
                   MLFLOW_ARTIFACTS_DESTINATION=str(folder / "artifacts"), **settings)
    try:
        _checked(run_script("mlflow-server.sh", "start", env))
        pid = pidfile_pid(run_dir / "mlflow" / "server.pid")
        client_env = {**env, **read_env_file(run_dir / "mlflow" / "env")}
        yield client_env["MLFLOW_TRACKING_URI"], pid, client_env
    finally:
        _checked(run_script("mlflow-server.sh", "stop", env))


@contextmanager
def ray_head(folder: Path, num_cpus: int = 2, **settings: str):
    """infra/local/ray-head.sh: one `ray start --head --block` process group with token
    authentication, stopped by PID. Yields (dashboard URL, PID, env for the Ray CLI)."""
    run_dir = folder / "run"
    env = base_env(run_dir, RAY_HEAD_PORT=str(free_port()), RAY_DASHBOARD_PORT=str(free_port()),
                   RAY_DASHBOARD_AGENT_PORT=str(free_port()), RAY_CLIENT_SERVER_PORT=str(free_port()),
                   RAY_HEAD_NUM_CPUS=str(num_cpus), **settings)
    try:
        _checked(run_script("ray-head.sh", "start", env))
        pid = pidfile_pid(run_dir / "ray" / "head.pid")
        client_env = {**env, **read_env_file(run_dir / "ray" / "env")}
        yield client_env["RAY_API_SERVER_ADDRESS"], pid, client_env
    finally:
        _checked(run_script("ray-head.sh", "stop", env))
