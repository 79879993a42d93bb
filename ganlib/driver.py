"""Who drives a sweep: the driver's identity, recorded on the sweep's parent run, and whether
that driver still runs.

Two drivers on one sweep run its trials twice and write its Tune state and MLflow runs over each
other. ``--resume`` without ``--name`` continues the latest unfinished sweep, which is easily a
sweep still running in another terminal; so ``--resume`` asks first. On the driver's own host
the answer is exact: the PID and its start time (a PID alone can be reused). From another host
it cannot be told, and ``still_running`` says so (None).
"""

from __future__ import annotations

import os
import socket
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
