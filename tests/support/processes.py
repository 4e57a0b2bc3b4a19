"""Stopping the real processes tests and benchmarks start (servers, workers)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any


def alive(pid: int) -> bool:
    """True while the process exists and is neither a zombie nor dead (per /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 30.0) -> int:
    """SIGTERM (a graceful stop), SIGKILL after `timeout` seconds; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    return int(proc.returncode)
