"""Cleans up a private local Ray cluster when the sweep driver that started it dies.

Ray's own fate-sharing takes the GCS and the raylet down with a SIGKILLed driver, but not the
processes the raylet started (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``), which live on
with parent PID 1. The driver puts a unique token in its environment before ``ray.init``, so every
process of its private cluster inherits it, and starts this watchdog with a pipe on its standard
input. When the driver is gone, however it died, the pipe closes: the watchdog sends SIGTERM, then
SIGKILL, to every process whose environment holds the token, and to nothing else.

    python -m ganlib.reaper TOKEN   (started by ganlib.cluster, never by hand)
"""

from __future__ import annotations

import os
import signal
import sys
import time

TOKEN_VARIABLE = "GANLIB_SWEEP_TOKEN"


def marked_processes(token: str) -> list[int]:
    """PIDs of this user's processes whose environment holds ``TOKEN_VARIABLE=token``."""
    needle = f"{TOKEN_VARIABLE}={token}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:  # gone, or not ours
            continue
    return found


def reap(token: str, grace_s: float = 3.0) -> int:
    """SIGTERM every marked process, SIGKILL what is left after ``grace_s``; returns how many."""
    pids = marked_processes(token)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and (pids := marked_processes(token)):
            time.sleep(0.1)
        if not pids:
            break
    return len(pids)


def main(argv: list[str]) -> int:
    token = argv[0]
    sys.stdin.buffer.read()  # blocks until the driver's end of the pipe closes: it exited or died
    time.sleep(0.5)  # a clean exit has already called ray.shutdown(); give its processes a moment
    reap(token)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
