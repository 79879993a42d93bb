"""infra/local/ray-head.sh and infra/local/mlflow-server.sh, run for real: loopback only,
authentication, PID files, and a stop that leaves no process behind. Plus a static check that
no local script or manifest binds a server to a public address."""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from servers import BIN, LOCAL, REPO, base_env, free_port, group_alive, group_pids, mlflow_server, ray_head, run_script

K8S_DIR, RAY_DIR = REPO / "infra" / "k8s", REPO / "infra" / "ray"
LOOPBACK = {"127.0.0.1", "::1"}


def _listen_sockets() -> dict[int, tuple[str, int]]:
    """socket inode -> (address, port) of every listening TCP socket, from /proc/net/tcp{,6}."""
    out = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hex_ip, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_ip)
            # /proc prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            ip = ipaddress.ip_address(raw)
            if ip.version == 6 and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            out[int(fields[9])] = (str(ip), int(hex_port, 16))
    return out


def _listening(pgid: int) -> set[tuple[str, int, int]]:
    """(address, port, pid) of every listening TCP socket of a process group."""
    sockets, out = _listen_sockets(), set()
    for pid in group_pids(pgid):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[len("socket:["):-1])
                if inode in sockets:
                    out.add((*sockets[inode], pid))
    return out


def _server_id(pid: int) -> str | None:
    """GANLIB_SERVER_ID in a process's environment (what the scripts' stop checks)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ids = [e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"GANLIB_SERVER_ID=")]
    return ids[0] if ids else None


def _ours(pgid: int, server_id: str) -> set[int]:
    """The processes of the group that infra/local/common.sh counts as its server's: our id in
    the environment, or a parent in the group that is ours."""
    parent = {}
    for pid in group_pids(pgid):
        try:
            parent[pid] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            pass
    ours = {pid for pid in parent if _server_id(pid) == server_id}
    while new := {pid for pid, ppid in parent.items() if pid not in ours and ppid in ours}:
        ours |= new
    return ours


def _http_status(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


# -- static: nothing binds a public address -----------------------------------------------------
def _code_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_local_scripts_bind_loopback_only_and_never_ray_stop():
    scripts = sorted(LOCAL.glob("*.sh"))
    assert {p.name for p in scripts} >= {"ray-head.sh", "mlflow-server.sh", "common.sh"}
    text = "\n".join("\n".join(_code_lines(p)) for p in scripts)
    assert "BIND_HOST=127.0.0.1" in text
    assert not re.search(r"0\.0\.0\.0|\[::\]|--host[= ]+::", text)
    # every host / IP flag given to a server is the loopback constant
    for flag in re.findall(r"(--(?:host|dashboard-host|node-ip-address))[= ]+(\S+)", text):
        assert flag[1].strip('"') == "$BIND_HOST", flag
    assert not re.search(r"\bray\b[^\n]*\bstop\b", text)  # never `ray stop`
    assert "pkill" not in text and "killall" not in text
    fake = (RAY_DIR / "fake_cluster.py").read_text()
    assert '"stop"' not in fake and "'stop'" not in fake and "0.0.0.0" not in fake


def _k8s_docs() -> list[dict]:
    return [d for p in sorted(K8S_DIR.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


def _walk(obj, key: str):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                yield v
            yield from _walk(v, key)
    elif isinstance(obj, list):
        for item in obj:
            yield from _walk(item, key)


def test_manifests_expose_nothing_outside_the_cluster():
    docs = _k8s_docs()
    assert docs
    kinds = {d["kind"] for d in docs}
    assert "Ingress" not in kinds and "Route" not in kinds
    for doc in docs:
        if doc["kind"] == "Service":
            assert doc["spec"].get("type", "ClusterIP") == "ClusterIP", doc["metadata"]["name"]
            assert "externalIPs" not in doc["spec"]
        assert not [v for v in _walk(doc, "hostNetwork") if v], doc["metadata"]
        assert not list(_walk(doc, "hostPort")), doc["metadata"]
        assert all(v == "ClusterIP" for v in _walk(doc, "serviceType")), doc["metadata"]
        assert not [v for v in _walk(doc, "enableIngress") if v]
    # The only all-interfaces bind is the MLflow server inside its own pod network namespace,
    # behind the ClusterIP Service; Ray's head keeps KubeRay's in-pod defaults.
    text = "\n".join("\n".join(_code_lines(p)) for p in K8S_DIR.glob("*.yaml"))
    assert text.count("0.0.0.0") == 1 and "--host=0.0.0.0" in text
    aws = (RAY_DIR / "aws-gpu.yaml").read_text()
    assert "--dashboard-host=127.0.0.1" in aws and "0.0.0.0" not in "\n".join(
        line.split("#")[0] for line in aws.splitlines())


# -- the Ray head ---------------------------------------------------------------------------------
def test_ray_head_script_loopback_token_auth_and_clean_stop(tmp_path):
    with ray_head(tmp_path, num_cpus=1) as (dashboard, pid, env):
        run_dir = tmp_path / "run" / "ray"
        token_file = Path(env["RAY_AUTH_TOKEN_PATH"])
        assert token_file.parent == run_dir and stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert len(token_file.read_text()) == 64
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_ADDRESS"].startswith("127.0.0.1:")

        # every port of every process of the head listens on the loopback only
        listening = _listening(pid)
        ports = {port for _, port, _ in listening}
        assert int(env["RAY_ADDRESS"].rsplit(":", 1)[1]) in ports  # the GCS
        assert int(dashboard.rsplit(":", 1)[1]) in ports
        assert {ip for ip, _, _ in listening} <= LOOPBACK, listening

        # token authentication: the Jobs API refuses a request without the token
        assert _http_status(f"{dashboard}/api/jobs/") == 401
        assert _http_status(f"{dashboard}/api/jobs/",
                            {"Authorization": f"Bearer {token_file.read_text()}"}) == 200
        listed = subprocess.run([str(BIN / "ray"), "job", "list"], env=env, capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stdout + listed.stderr
        no_token = {**env, "RAY_AUTH_TOKEN_PATH": str(tmp_path / "wrong-token")}
        (tmp_path / "wrong-token").write_text("0" * 64)
        refused = subprocess.run([str(BIN / "ray"), "job", "list"], env=no_token, capture_output=True, text=True,
                                 timeout=60)
        assert refused.returncode != 0

        # a second start is refused while it runs; status reads the PID file
        again = run_script("ray-head.sh", "start", env)
        assert again.returncode != 0 and "already running" in again.stderr
        status = run_script("ray-head.sh", "status", env)
        assert status.returncode == 0 and str(pid) in status.stdout
        assert (run_dir / "head.pid").read_text().split()[0] == str(pid)
        # every process of the head carries the id the PID file records, or descends from one
        # that does (retitled processes overwrite theirs): what stop needs to find leftovers
        assert _ours(pid, (run_dir / "head.pid").read_text().split()[2]) == set(group_pids(pid))
    assert not group_alive(pid)  # head, raylet, GCS, dashboard, agents, workers: all gone
    assert not (tmp_path / "run" / "ray" / "head.pid").exists()
    assert run_script("ray-head.sh", "status", base_env(tmp_path / "run")).returncode == 3


def test_ray_head_script_stops_the_leftovers_of_a_killed_head(tmp_path):
    """`ray start --block` SIGKILLed (the OOM killer, a crash): GCS, raylet, dashboard and agents
    run on in its process group. `stop` finds them by the id they carry and ends them all."""
    with ray_head(tmp_path, num_cpus=1) as (_, pid, env):
        children = set(group_pids(pid)) - {pid}
        assert len(children) >= 4
        os.kill(pid, 9)
        deadline = time.time() + 10
        while _running(pid) and time.time() < deadline:
            time.sleep(0.2)
        assert not _running(pid) and set(group_pids(pid)) & children  # a headless group
        status = run_script("ray-head.sh", "status", env)
        assert status.returncode == 3
        stopped = run_script("ray-head.sh", "stop", env, timeout=120)
        assert stopped.returncode == 0 and "warning" not in stopped.stderr, stopped.stderr
        assert not group_alive(pid)


# -- the MLflow server --------------------------------------------------------------------------
def test_mlflow_server_script_loopback_and_clean_stop(tmp_path):
    with mlflow_server(tmp_path) as (uri, pid, env):
        assert uri.startswith("http://127.0.0.1:")
        listening = _listening(pid)
        assert int(uri.rsplit(":", 1)[1]) in {port for _, port, _ in listening}
        assert {ip for ip, _, _ in listening} <= LOOPBACK, listening
        client = MlflowClient(uri)
        experiment_id = client.create_experiment("probe")
        run = client.create_run(experiment_id)
        client.log_text(run.info.run_id, "hello", "note.txt")  # proxied into the artifacts folder
        assert any((tmp_path / "artifacts").rglob("note.txt"))
        server_id = (tmp_path / "run" / "mlflow" / "server.pid").read_text().split()[2]
        assert _ours(pid, server_id) == set(group_pids(pid))
    assert not group_alive(pid)
    assert not (tmp_path / "run" / "mlflow" / "server.pid").exists()


def test_mlflow_server_script_basic_auth(tmp_path):
    pytest.importorskip("flask_wtf", reason="MLflow basic auth needs Flask-WTF (the dev extra pins it)")
    with mlflow_server(tmp_path, GANLIB_MLFLOW_AUTH="1") as (uri, pid, env):
        state = tmp_path / "run" / "mlflow"
        for secret in ("admin_password", "flask_secret_key", "env"):
            assert stat.S_IMODE((state / secret).stat().st_mode) == 0o600, secret
        search = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
        assert _http_status(search) == 401
        assert _http_status(search, {"Authorization": "Basic " + base64.b64encode(b"admin:wrong").decode()}) == 401
        user, password = env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        assert _http_status(search, {"Authorization": f"Basic {basic}"}) == 200
        # the MLflow client (what the sweeps use) authenticates from the environment
        probe = subprocess.run(
            [str(BIN / "python"), "-c",
             "import sys; from mlflow.tracking import MlflowClient; "
             "print(MlflowClient(sys.argv[1]).create_experiment('auth-probe'))", uri],
            env=env, capture_output=True, text=True, timeout=120)
        assert probe.returncode == 0, probe.stderr[-2000:]
        assert probe.stdout.strip().splitlines()[-1].isdigit()  # the new experiment's id
    assert not group_alive(pid)


def test_scripts_refuse_unknown_actions(tmp_path):
    env = base_env(tmp_path / "run", RAY_HEAD_PORT=str(free_port()))
    for script in ("ray-head.sh", "mlflow-server.sh"):
        proc = run_script(script, "restart", env)
        assert proc.returncode == 2 and "usage" in proc.stderr
        assert run_script(script, "stop", env).returncode == 0  # nothing running: a no-op


# -- stop signals only what start started ----------------------------------------------------------
STATE = {"ray-head.sh": ("ray", "head.pid"), "mlflow-server.sh": ("mlflow", "server.pid")}


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state, ppid, pgrp, session, ...)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _running(pid: int) -> bool:
    try:
        return _stat(pid)[0] != "Z"
    except (OSError, IndexError):
        return False


def _orphaned_group(**env: str) -> tuple[int, int]:
    """A process group whose leader has exited while a member (sleep) still runs:
    (the dead leader's PID = the group id, the member's PID)."""
    leader = subprocess.Popen(["bash", "-c", "sleep 300 & echo $!"], start_new_session=True,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, **env})
    member = int(leader.stdout.readline())
    leader.wait(10)
    leader.stdout.close()
    assert int(_stat(member)[2]) == leader.pid and _running(member) and not _running(leader.pid)
    return leader.pid, member


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


@pytest.mark.parametrize("script", sorted(STATE))
def test_stop_never_signals_a_process_it_did_not_start(tmp_path, script):
    """A PID file whose PID now belongs to someone else (a live session leader, or a process
    group whose leader is gone) must not make `stop` signal it. The PID file records the
    process's start time and an id put into its environment; nothing that does not match is
    touched."""
    env = base_env(tmp_path / "run")
    folder, name = STATE[script]
    pidfile = tmp_path / "run" / folder / name
    pidfile.parent.mkdir(parents=True)
    # An unrelated session leader (its own process group), started by someone else: the case
    # the old script SIGKILLed when the recorded server had died and the number was reused.
    victim = subprocess.Popen(["sleep", "300"], start_new_session=True)
    group, member = _orphaned_group()
    some_id = str(uuid.uuid4())
    try:
        assert _stat(victim.pid)[3] == str(victim.pid)  # a session leader, like our servers
        start = _stat(victim.pid)[19]
        stale = {
            "bare PID (older script)": f"{victim.pid}\n",
            "other start time": f"{victim.pid} {int(start) + 1} {some_id}\n",
            "same start time, not our id": f"{victim.pid} {start} {some_id}\n",
            "dead leader, live group without our id": f"{group} 1 {some_id}\n",
            "garbage": "not a pid\n",
        }
        for case, content in stale.items():
            pidfile.write_text(content)
            status = run_script(script, "status", env)
            assert status.returncode == 3 and "not running" in status.stdout, case
            stopped = run_script(script, "stop", env, timeout=60)
            assert stopped.returncode == 0, (case, stopped.stderr)
            assert _running(victim.pid) and victim.poll() is None, case
            assert _running(member), case
            assert not pidfile.exists(), case  # a stale file is cleared
    finally:
        victim.kill()
        victim.wait()
        _kill(member)


@pytest.mark.parametrize("script", sorted(STATE))
def test_stop_ends_the_leftovers_of_its_own_server(tmp_path, script):
    """The other side: when our server's leader died and left processes behind in its group,
    those carry our id and are stopped; an unrelated process in the same situation is not."""
    env = base_env(tmp_path / "run")
    folder, name = STATE[script]
    pidfile = tmp_path / "run" / folder / name
    pidfile.parent.mkdir(parents=True)
    our_id = str(uuid.uuid4())
    group, member = _orphaned_group(GANLIB_SERVER_ID=our_id)
    try:
        pidfile.write_text(f"{group} 1 {our_id}\n")
        stopped = run_script(script, "stop", env, timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        deadline = time.time() + 10
        while _running(member) and time.time() < deadline:
            time.sleep(0.2)
        assert not _running(member)
        assert not pidfile.exists()
    finally:
        _kill(member)


@pytest.mark.parametrize("script", sorted(STATE))
def test_stop_ends_leftovers_that_lost_the_id_and_their_parent(tmp_path, script):
    """What failed in CI: Ray's workers retitle themselves (their environment in /proc no longer
    shows the id), and when the raylet that started them exits they are re-parented out of the
    group's tree. Such a process is still the server's while another process of the group carries
    the id (only its session can join the group), and stays so, by PID and start time, after that
    one has exited: here it ignores SIGTERM, so it is still running when the id-carrier is gone,
    and only the SIGKILL that follows ends it."""
    env = base_env(tmp_path / "run")
    folder, name = STATE[script]
    pidfile = tmp_path / "run" / folder / name
    pidfile.parent.mkdir(parents=True)
    our_id = str(uuid.uuid4())
    stubborn = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); "
                "time.sleep(300)")
    leader = subprocess.Popen(
        ["bash", "-c", 'sleep 300 & echo $!; '
                       'bash -c \'env -u GANLIB_SERVER_ID "$0" -c "$1" & echo $!\' "$0" "$1"',
         sys.executable, stubborn],
        start_new_session=True, stdout=subprocess.PIPE, text=True, env={**os.environ, "GANLIB_SERVER_ID": our_id})
    carrier, orphan = int(leader.stdout.readline()), int(leader.stdout.readline())
    assert leader.stdout.readline() == "\n"  # the orphan has set its SIGTERM handler
    leader.wait(10)
    leader.stdout.close()
    try:
        assert {int(_stat(p)[2]) for p in (carrier, orphan)} == {leader.pid} and not _running(leader.pid)
        assert int(_stat(orphan)[1]) != leader.pid and _running(orphan)  # re-parented, out of the tree
        assert b"GANLIB_SERVER_ID" not in Path(f"/proc/{orphan}/environ").read_bytes()
        pidfile.write_text(f"{leader.pid} 1 {our_id}\n")
        stopped = run_script(script, "stop", env, timeout=60)
        assert stopped.returncode == 0 and "warning" not in stopped.stderr, stopped.stderr
        assert not _running(carrier) and not _running(orphan)
        assert not pidfile.exists()
    finally:
        _kill(carrier)
        _kill(orphan)
