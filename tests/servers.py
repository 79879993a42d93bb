"""Real local servers for the end-to-end tests, bound to 127.0.0.1 and stopped by PID."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} server exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered (401 under Ray's token authentication): it is up
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def server_env(token_file: Path | None = None) -> dict[str, str]:
    """The environment of the servers and of the CLI that talks to them. With ``token_file``,
    Ray's token authentication reads the cluster token from it (`ray start` does not create one,
    unlike `ray.init()`)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0",
           "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_AUTH_MODE": "token"}
    if token_file is not None:
        env["RAY_AUTH_TOKEN_PATH"] = str(token_file)
    return env


def write_token(folder: Path) -> Path:
    path = folder / "ray_auth_token"
    path.write_text(secrets.token_hex(32))
    path.chmod(0o600)
    return path


@contextmanager
def mlflow_server(folder: Path):
    """`mlflow server` with a SQLite store and proxied artifacts, one worker (the default
    15 processes take 3.6 GB)."""
    port, log = free_port(), folder / "mlflow.log"
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{folder}/mlflow.db",
         "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], stdout=log.open("w"), stderr=subprocess.STDOUT, env=server_env(), start_new_session=True)
    try:
        _wait(f"http://127.0.0.1:{port}/health", proc, 120, log)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        _stop(proc)


@contextmanager
def ray_head(folder: Path, num_cpus: int = 2):
    """`ray start --head --block`: one process that owns the cluster, so stopping it by PID
    stops this cluster only (`ray stop` would kill every Ray process on the machine)."""
    port, dash, log = free_port(), free_port(), folder / "ray-head.log"
    env = server_env(write_token(folder))
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--port", str(port), "--num-cpus", str(num_cpus),
         "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
         "--node-ip-address", "127.0.0.1"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait(f"http://127.0.0.1:{dash}/api/version", proc, 120, log)
        yield f"http://127.0.0.1:{dash}", proc.pid, env
    finally:
        _stop(proc)
