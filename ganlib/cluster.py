"""The Ray side of a sweep: which cluster, whether it can run the trials asked for, and a clean
end for a private one.

* ``--ray-address`` / ``$RAY_ADDRESS`` (``ray job submit`` sets it): join that cluster. The address
  is probed first (a dead address is one clear error, not 40 s of connection warnings).
* otherwise: a private local Ray on this machine, checked before it starts against what the
  trials ask for (CPUs, GPUs), and watched by ``ganlib.reaper`` so that a killed driver leaves
  no Ray process behind.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlparse

from .reaper import TOKEN_VARIABLE
from .settings import SettingsError, SweepSettings

PROBE_TIMEOUT_S = 3.0


@dataclass
class Cluster:
    private: bool
    nodes: int  # alive nodes when the sweep started
    resources: dict[str, float]
    reaper: subprocess.Popen | None = None
    owned: bool = True  # started or joined by this sweep (not a Ray the caller had initialised)
    _closing: threading.Thread | None = field(default=None, repr=False)

    def close_in_background(self) -> None:
        """Start closing on a thread, for a driver that has work left without Ray (the report):
        a private Ray's shutdown is mostly waiting for its processes to exit (1.4-1.9 s here)."""
        if self._closing is None:
            self._closing = threading.Thread(target=self._close, name="ray-shutdown", daemon=True)
            self._closing.start()

    def close(self) -> None:
        """Close now, or wait for the closing ``close_in_background`` started."""
        if self._closing is None:
            self._close()
        else:
            self._closing.join()

    def _close(self) -> None:
        import ray

        if self.owned:
            ray.shutdown()
        if self.reaper is not None:
            self.reaper.stdin.close()  # the reaper cleans up what ray.shutdown() left behind
            try:
                self.reaper.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.reaper.kill()


def local_resources() -> tuple[float, int]:
    """(CPUs, GPUs) a private local Ray would have on this machine."""
    try:
        from ray._private.utils import get_num_cpus  # what ray.init itself uses (cgroup-aware)

        cpus = float(get_num_cpus())
    except Exception:  # noqa: BLE001 - a private helper: fall back to the affinity mask
        cpus = float(len(os.sched_getaffinity(0)))
    import torch

    return cpus, torch.cuda.device_count()


def check_private_resources(settings: SweepSettings) -> None:
    """A private local Ray that lacks what one trial asks for would leave every trial PENDING
    for ever: refuse before it starts."""
    cpus, gpus = local_resources()
    if settings.cpus_per_trial > cpus:
        raise SettingsError("cpus_per_trial", settings.cpus_per_trial,
                            f"a number in (0, {cpus:g}]: the private local Ray has {cpus:g} CPUs (join a larger "
                            "cluster with --ray-address)")
    if settings.gpus_per_trial > gpus:
        where = "has no CUDA device" if gpus == 0 else f"has {gpus} GPUs"
        raise SettingsError("gpus_per_trial", settings.gpus_per_trial,
                            f"a number <= {gpus}: the private local Ray runs on this machine, which {where} (join "
                            "a cluster with GPUs with --ray-address, or set 0)")


def check_address(address: str) -> None:
    """The address must answer before ``ray.init`` is asked to join it."""
    if address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"ray-gcs://{address}")
    if parsed.scheme in ("http", "https"):
        raise SettingsError("ray_address", address, "the cluster's GCS address host:port (6379 by default) or "
                            "ray://host:10001; this looks like the dashboard / Jobs API, which `ray job submit` "
                            "takes")
    if parsed.scheme not in ("ray-gcs", "ray") or not parsed.hostname or not parsed.port:
        raise SettingsError("ray_address", address, "host:port of a Ray cluster's GCS, ray://host:port, or 'auto'")
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as err:
        raise SettingsError("ray_address", address, f"the address of a running Ray cluster (nothing answers at "
                            f"{parsed.hostname}:{parsed.port}: {err.strerror or err})") from None


def connect(settings: SweepSettings) -> Cluster:
    """Join the named cluster, or start a private one (with its reaper)."""
    import ray

    if ray.is_initialized():  # a notebook or a test session brought its own: use it, leave it running
        return Cluster(False, _alive_nodes(), ray.cluster_resources(), owned=False)
    if settings.ray_address:
        ray.init(address=settings.ray_address, log_to_driver=False)
        return Cluster(False, _alive_nodes(), ray.cluster_resources())
    # A bare ray.init() would join whatever /tmp/ray/ray_current_cluster names, stale or not.
    token = uuid.uuid4().hex
    os.environ[TOKEN_VARIABLE] = token  # inherited by every process of the private cluster
    try:
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
    finally:
        del os.environ[TOKEN_VARIABLE]  # ... and by nothing the driver starts later
    env = {k: v for k, v in os.environ.items() if k != TOKEN_VARIABLE}
    reaper = subprocess.Popen([sys.executable, "-m", "ganlib.reaper", token], stdin=subprocess.PIPE, env=env,
                              start_new_session=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    return Cluster(True, _alive_nodes(), ray.cluster_resources(), reaper)


def _alive_nodes() -> int:
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive"))


def no_node_fits(cpus: float, gpus: float, nodes: list[dict]) -> str | None:
    """None if an alive node (``ray.nodes()``) has the CPUs and GPUs of one trial, else what the
    nodes offer. A trial's resources are one placement-group bundle: one node must hold them all,
    so a cluster of two 2-CPU nodes cannot run a 3-CPU trial."""
    alive = [node.get("Resources", {}) for node in nodes if node.get("Alive")]
    if any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in alive):
        return None
    most_cpus = max((r.get("CPU", 0) for r in alive), default=0)
    most_gpus = max((r.get("GPU", 0) for r in alive), default=0)
    return (f"no node of the cluster has the {cpus:g} CPUs and {gpus:g} GPUs of one trial (--cpus-per-trial, "
            f"--gpus-per-trial) now: the most any of its {len(alive)} nodes has is {most_cpus:g} CPUs and "
            f"{most_gpus:g} GPUs")


def warn_if_no_node_fits(settings: SweepSettings) -> None:
    """A joined cluster that cannot place a trial leaves every trial PENDING: until an autoscaler
    adds a node that fits, or for ever (Tune only warns, after 60 s, in the middle of its own
    output). Whether an autoscaler runs, and what it may add, the driver cannot tell (the head
    runs Ray's monitor on any cluster), so this is a warning at the start, not a refusal."""
    import ray

    missing = no_node_fits(settings.cpus_per_trial, settings.gpus_per_trial, ray.nodes())
    if missing:
        print(f"warning: {missing}; the trials wait until an autoscaler adds one that fits (a cluster without "
              "one: stop with Ctrl-C and ask for less)", file=sys.stderr, flush=True)


def check_joined_cluster(settings: SweepSettings, cluster: Cluster) -> None:
    """On a cluster of several nodes (or one that scales out), trials and their checkpoints
    move between nodes: Tune's storage must be shared by all of them. (MLflow needs nothing:
    only the driver talks to the tracking store.)"""
    if cluster.private or "://" in settings.storage_path:
        return
    # A head without CPUs runs no trials: they will run on other nodes (autoscaled ones, say).
    if cluster.nodes > 1 or cluster.resources.get("CPU", 0) == 0:
        raise SettingsError("storage_path", settings.storage_path,
                            "shared storage on a multi-node cluster: s3://bucket/path, gs://..., or a folder every "
                            "node mounts given as file:///path (a local folder is not seen by the other nodes)")
