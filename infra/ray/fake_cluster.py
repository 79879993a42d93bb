"""A local autoscaling Ray cluster with the node types of infra/ray/aws-gpu.yaml, scaled down.

Ray's ``ray.cluster_utils.AutoscalingCluster`` runs the fake multinode provider: worker "nodes"
are extra raylets on this machine, launched and removed by the real autoscaler. Two things stop
it from being used as is with the Ray 2.60 wheel on a shared machine:

1. Its constructor reads ``ray/autoscaler/_private/fake_multi_node/example.yaml`` as the base
   config, and ``prepare_config()`` reads the same file as the provider defaults; the wheel does
   not ship it (FileNotFoundError). Here local-fake-multinode.yaml, a complete config, takes its
   place, and ``scaled_down()`` puts the launcher config's node types into it.
2. Its ``start()`` and ``shutdown()`` run ``ray stop --force``, which kills EVERY Ray process on
   the machine. ``FakeAutoscalingCluster`` starts the head as one ``ray start --head --block``
   process in its own session and stops that process group by PID (as infra/local/ray-head.sh
   does); the fake workers are started by the head's autoscaler inside that process group, so
   they go with it. Nothing here calls ``ray stop``.

Like infra/local/ray-head.sh, the cluster listens on 127.0.0.1 only and has Ray's token
authentication on (``cluster.env`` is the environment its clients need).

Use from a test::

    cluster = FakeAutoscalingCluster(log_dir=tmp_path)
    cluster.start()
    try:
        subprocess.run(["ray", "job", "submit", "--address", cluster.dashboard_url, "--", ...],
                       env=cluster.env)
    finally:
        cluster.shutdown()

The head offers 0 CPUs, so every trial makes the autoscaler add a ``ray.worker.cpu`` or
``ray.worker.gpu`` node ({CPU: 1} / {CPU: 1, GPU: 1}; the GPU is a fake resource, no CUDA).
tests/test_infra_autoscaling.py runs a sweep on it.

``python infra/ray/fake_cluster.py`` prints the generated autoscaler config (starts nothing).
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from ray.cluster_utils import AutoscalingCluster

FAKE_CONFIG = Path(__file__).resolve().with_name("local-fake-multinode.yaml")
AWS_CONFIG = Path(__file__).resolve().with_name("aws-gpu.yaml")
# What one fake node may hold: each is a raylet + agents on this machine (about 0.5 GB).
FAKE_NODE_CPUS, FAKE_NODE_GPUS, FAKE_MAX_WORKERS_PER_TYPE = 1, 1, 2
FAKE_OBJECT_STORE_BYTES = 200_000_000
# The fake provider hard-codes the head's node type name (FAKE_HEAD_NODE_TYPE).
HEAD_NODE_TYPE = "ray.head.default"
_PROVIDER = "fake_multinode"
LOOPBACK = "127.0.0.1"


def load_config(path: str | os.PathLike = FAKE_CONFIG) -> dict[str, Any]:
    with open(path) as f:
        config = yaml.safe_load(f)
    if config.get("provider", {}).get("type") != _PROVIDER:
        raise ValueError(f"{path}: provider.type must be {_PROVIDER!r}")
    if config.get("head_node_type") != HEAD_NODE_TYPE:
        raise ValueError(f"{path}: head_node_type must be {HEAD_NODE_TYPE!r} (the fake provider's head type)")
    return config


@contextmanager
def provider_defaults(path: str | os.PathLike = FAKE_CONFIG) -> Iterator[None]:
    """While the block runs, Ray's fake_multinode defaults file is ``path`` (a complete config)
    instead of the example.yaml missing from the wheel, so ``prepare_config()`` works."""
    from ray.autoscaler._private import providers

    previous = providers._DEFAULT_CONFIGS.get(_PROVIDER)
    providers._DEFAULT_CONFIGS[_PROVIDER] = lambda: str(path)
    try:
        yield
    finally:
        if previous is None:
            providers._DEFAULT_CONFIGS.pop(_PROVIDER, None)
        else:
            providers._DEFAULT_CONFIGS[_PROVIDER] = previous


def prepared_config(path: str | os.PathLike = FAKE_CONFIG) -> dict[str, Any]:
    """``prepare_config`` + ``validate_config`` of the installed Ray, as ``ray up`` would do."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    with provider_defaults(path):
        config = prepare_config(load_config(path))
    validate_config(config)
    return config


def scaled_down(launcher_config: dict[str, Any], base: str | os.PathLike = FAKE_CONFIG) -> dict[str, Any]:
    """A fake-multinode config with the node types of a real launcher config (``ray up`` YAML),
    resources scaled down to this machine: the same type names and head type, the head's CPU
    count kept (0: it runs no trials), every worker type at most 1 CPU / 1 GPU and
    ``FAKE_MAX_WORKERS_PER_TYPE`` nodes, ``min_workers`` kept. Provider, timeouts and the rest
    come from ``base`` (local-fake-multinode.yaml)."""
    config = load_config(base)
    head_type = launcher_config["head_node_type"]
    if head_type != HEAD_NODE_TYPE:
        raise ValueError(f"the fake provider needs the head node type to be named {HEAD_NODE_TYPE!r}")
    node_types = {}
    for name, node_type in launcher_config["available_node_types"].items():
        resources = dict(node_type.get("resources", {}))
        if name == head_type:
            scaled = {"resources": {**resources, "object_store_memory": FAKE_OBJECT_STORE_BYTES}, "node_config": {},
                      "max_workers": 0}
        else:
            if "CPU" in resources:
                resources["CPU"] = min(resources["CPU"], FAKE_NODE_CPUS)
            if "GPU" in resources:
                resources["GPU"] = min(resources["GPU"], FAKE_NODE_GPUS)
            scaled = {"resources": {**resources, "object_store_memory": FAKE_OBJECT_STORE_BYTES}, "node_config": {},
                      "min_workers": node_type.get("min_workers", 0),
                      "max_workers": min(node_type.get("max_workers", FAKE_MAX_WORKERS_PER_TYPE),
                                         FAKE_MAX_WORKERS_PER_TYPE)}
        node_types[name] = scaled
    config["available_node_types"] = node_types
    return config


def cluster_args(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(head_resources, worker_node_types, config_kwargs)``: the arguments of
    ``AutoscalingCluster(head_resources, worker_node_types, **config_kwargs)``."""
    config = copy.deepcopy(config)
    node_types = config.pop("available_node_types")
    head_type = config.pop("head_node_type")
    head_resources = node_types.pop(head_type)["resources"]
    return head_resources, node_types, config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class FakeAutoscalingCluster(AutoscalingCluster):
    """``AutoscalingCluster`` whose config comes from our YAML and whose start/shutdown touch
    only the cluster it started (see the module docstring)."""

    def __init__(self, launcher_config: str | os.PathLike = AWS_CONFIG, *, port: int | None = None,
                 dashboard_port: int | None = None, log_dir: str | os.PathLike | None = None,
                 autoscaler_v2: bool = False, **config_kwargs: Any) -> None:
        if autoscaler_v2:
            # The v2 autoscaler calls prepare_config() inside the head, where the missing
            # example.yaml cannot be substituted.
            raise ValueError("autoscaler_v2 needs the fake provider's example.yaml, which the Ray wheel lacks")
        with open(launcher_config) as f:
            self._base_config = scaled_down(yaml.safe_load(f))
        head_resources, worker_node_types, base_kwargs = cluster_args(self._base_config)
        self.port = port or _free_port()
        self.dashboard_port = dashboard_port or _free_port()
        # Distinct from every other head on the machine (defaults 52365 / 10001 collide).
        self.agent_port, self.client_port = _free_port(), _free_port()
        self._log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="ganlib-fake-cluster-"))
        self._proc: subprocess.Popen | None = None
        super().__init__(head_resources, worker_node_types, autoscaler_v2=False, **{**base_kwargs, **config_kwargs})

    def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs):
        # AutoscalingCluster._generate_config with the scaled-down launcher config as the base
        # instead of the example.yaml missing from the wheel.
        config = copy.deepcopy(self._base_config)
        config["available_node_types"] = copy.deepcopy(worker_node_types)
        config["available_node_types"][HEAD_NODE_TYPE] = {
            "resources": copy.deepcopy(head_resources), "node_config": {}, "max_workers": 0}
        config.update(copy.deepcopy(config_kwargs))
        return config

    @property
    def address(self) -> str | None:
        """The GCS address, for ``ray.init(address=...)`` (None before ``start()``)."""
        return self._config["provider"].get("gcs_address")

    @property
    def dashboard_url(self) -> str:
        """The dashboard / Jobs API, for ``ray job submit --address ...``."""
        return f"http://{LOOPBACK}:{self.dashboard_port}"

    def head_command(self, config_file: str | os.PathLike) -> list[str]:
        head = dict(self._config["available_node_types"][HEAD_NODE_TYPE]["resources"])
        cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
               f"--autoscaling-config={config_file}", f"--port={self.port}",
               f"--dashboard-host={LOOPBACK}", f"--dashboard-port={self.dashboard_port}",
               f"--dashboard-agent-listen-port={self.agent_port}", f"--ray-client-server-port={self.client_port}",
               f"--num-cpus={head.pop('CPU', 0)}", "--disable-usage-stats"]
        if "GPU" in head:
            cmd.append(f"--num-gpus={head.pop('GPU')}")
        if "object_store_memory" in head:
            cmd.append(f"--object-store-memory={head.pop('object_store_memory')}")
        if head:
            cmd.append(f"--resources={json.dumps(head)}")
        return cmd

    @property
    def env(self) -> dict[str, str]:
        """The environment of the head and of every client of this cluster (Ray CLI, drivers):
        token authentication with this cluster's token, the loopback-only node IP."""
        return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": str(self.token_path), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    @property
    def token_path(self) -> Path:
        return self._log_dir / "auth_token"

    def start(self, _system_config: dict | None = None, override_env: dict | None = None,
              timeout: float = 120) -> None:
        """Start the head (autoscaler included) and wait until its dashboard answers.

        Every process binds 127.0.0.1 (Ray's single-machine mode keeps the node IP on the
        loopback, as infra/local/ray-head.sh does) and Ray's token authentication is on with a
        token made here (`ray start` makes none)."""
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError("this cluster is already running")
        import ray._private.services as services

        self._log_dir.mkdir(parents=True, exist_ok=True)
        if not self.token_path.exists():
            self.token_path.write_text(secrets.token_hex(32))
        self.token_path.chmod(0o600)
        # The fake provider joins workers to <node ip>:6379 unless told the GCS address.
        self._config["provider"]["gcs_address"] = f"{LOOPBACK}:{self.port}"
        config_file = self._log_dir / "autoscaling-config.json"
        config_file.write_text(json.dumps(self._config))
        cmd = self.head_command(config_file)
        if _system_config is not None:
            cmd.append(f"--system-config={json.dumps(_system_config, separators=(',', ':'))}")
        env = {**self.env, "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1"}
        env.update(override_env or {})
        log = self._log_dir / "ray-head.log"
        with log.open("w") as out:
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.time() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"ray head exited early ({self._proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=2):
                    break
            except urllib.error.HTTPError:
                break  # it answered (401 without the token): it is up
            except OSError:
                pass
            if time.time() > deadline:
                self.shutdown()
                raise TimeoutError(f"ray head did not answer within {timeout} s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        services.find_gcs_addresses.cache_clear()

    @property
    def pid(self) -> int | None:
        """PID of the `ray start --head --block` process (its process group id)."""
        return self._proc.pid if self._proc is not None else None

    def shutdown(self, timeout: float = 30) -> None:
        """SIGTERM to the head's ``ray start --block`` process, which shuts its node down in
        order (the autoscaler, and with it the fake workers, included); whatever of its process
        group still runs after ``timeout`` gets SIGTERM, then SIGKILL. Never ``ray stop``.
        (SIGTERM to the whole group at once makes the head wait for a GCS that is shutting
        down too.)"""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
            if not group_alive(proc.pid):
                break
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.time() + grace
            while group_alive(proc.pid) and time.time() < deadline:
                time.sleep(0.5)
        if proc.poll() is None:
            proc.wait(10)
        import ray._private.services as services

        services.find_gcs_addresses.cache_clear()


def group_pids(pgid: int, include_zombies: bool = False) -> list[int]:
    """PIDs of the processes of a process group, from /proc (no name matching). Zombies are
    left out unless asked for: where PID 1 reaps no orphans, dead processes stay as zombies."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and (include_zombies or fields[0] != "Z"):
            pids.append(int(entry.name))
    return pids


def group_alive(pgid: int) -> bool:
    return bool(group_pids(pgid))


if __name__ == "__main__":
    print(json.dumps(FakeAutoscalingCluster(log_dir=tempfile.gettempdir())._config, indent=2))
