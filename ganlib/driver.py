"""Who drives a sweep: the driver's identity, recorded on the sweep's parent run, and whether
that driver still runs.

Two drivers on one sweep run its trials twice and write its Tune state and MLflow runs over each
other. ``--resume`` without ``--name`` continues the latest unfinished sweep, which is easily a
sweep still running in another terminal; so ``--resume`` asks first. On the driver's own host
the answer is exact: the PID and its start time (a PID alone can be reused). From another host
it cannot be told, and ``still_running`` says so (None).

The record is written once Ray has started, seconds after the check: two ``--resume`` runs
started together would both pass it. So a driver first ``claim``s its sweep on its host, an
exclusive ``flock`` on a file named after the sweep's Tune path, held until the driver ends (the
kernel drops it when the process dies, however it dies); the loser is refused. Drivers submitted
with ``ray job submit`` all run on the head, so the claim covers them; two drivers on different
hosts fall back to the record above.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import tempfile
from pathlib import Path
from typing import NamedTuple


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat, field 22); None for
    no such process, a zombie, or a system without /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


def identity(pid: int | None = None) -> str:
    """``HOST PID START`` of a process (this one by default); START is ``-`` without /proc."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()} {pid} {_start_time(pid) or '-'}"


class Identity(NamedTuple):
    host: str
    pid: int
    start: str  # clock ticks since boot, or "-"


def parse(recorded: str) -> Identity | None:
    """What ``identity`` wrote, or None for a record that is not one."""
    parts = recorded.split()
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return Identity(parts[0], int(parts[1]), parts[2])


def still_running(recorded: str) -> bool | None:
    """Whether the process ``identity`` recorded still runs: exact on its own host, None from
    another host or for a record that is not an identity."""
    who = parse(recorded)
    if who is None or who.host != socket.gethostname():
        return None
    if who.start != "-" or Path("/proc").is_dir():
        return _start_time(who.pid) == who.start
    try:  # no /proc (macOS): the PID alone
        os.kill(who.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SweepClaimed(Exception):
    """Another process on this host drives the sweep; ``holder`` is its ``identity``."""

    def __init__(self, key: str, holder: str):
        self.key, self.holder = key, holder
        super().__init__(f"{key} is claimed by {holder}")


def claims_dir() -> Path:
    """Where the claims' files live: ``$GANLIB_DRIVER_CLAIMS``, else a folder of this user's in
    the temporary directory (the drivers of one cluster run as one user on its head)."""
    return Path(os.environ.get("GANLIB_DRIVER_CLAIMS") or Path(tempfile.gettempdir()) / f"ganlib-drivers-{os.getuid()}")


class Claim:
    """This process's exclusive claim on ``key`` (a sweep's Tune path) until ``release`` or the
    process's end. Raises SweepClaimed if another process holds it."""

    def __init__(self, key: str, folder: Path | None = None):
        folder = folder or claims_dir()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.key, self.path = key, folder / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".claim")
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 4096, 0).decode(errors="replace").strip() or "another process"
            self.release()
            raise SweepClaimed(key, holder) from None
        # The file is never removed (a removal races with a process that has it open): each
        # holder writes who it is, for the refusal's message.
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{identity()}\n{key}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the lock
            self._fd = None
