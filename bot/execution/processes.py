"""A run's processes as one unit that can be ended as a whole (RunProcesses).

ansible-playbook forks its task processes into process groups and sessions of their own, so killing the
pexpect child's process group does not end a run: a `sleep 60` task kept running after cancel. Each run
is therefore put, in order of preference, into:

- its own cgroup v2 directory, ended at once with `cgroup.kill`;
- its own cgroup v1 freezer cgroup: frozen (nothing in it can fork any more), SIGKILLed, thawed;
- nothing (no writable cgroup hierarchy): then only the marker below finds its processes.

The first process joins its cgroup *before* it execs ansible-playbook (`wrap`), so nothing it forks
escapes. Every process of a run also inherits a random marker in its environment (RUNBOOK_BOT_RUN_MARKER),
found by scanning /proc/<pid>/environ: that is the fallback tracking, and a cross-check with cgroups. A
process that clears its own environment and is outside a cgroup is not found: the README says so.

`end()` sends SIGTERM, waits a grace period, sends SIGKILL, and returns what is still alive (nothing,
unless a process is stuck in the kernel): callers record a run final, and so release its lock, only when
that is empty. Signals go through pidfds opened before membership is checked, so a pid reused by an
unrelated process is never signalled. `as_record()` is stored in runs.processes so that another process
on the same host (a restarted worker, after a kill -9) can end the same run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MARKER_ENV = "RUNBOOK_BOT_RUN_MARKER"
TRACKING = ("auto", "cgroup2", "freezer", "environ")
_GROUP_DIR = "runbook-bot"
_PROC = Path("/proc")


def host_name() -> str:
    return socket.gethostname()


def boot_id() -> str:
    """Changes at every boot: processes recorded under another boot id are gone."""
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _mounts() -> dict[str, Path]:
    """'cgroup2' -> mount point, 'freezer' -> mount point of the v1 freezer hierarchy (when mounted rw)."""
    found: dict[str, Path] = {}
    try:
        lines = (_PROC / "self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, extra = left.split(), right.split()
        if len(fields) < 6 or len(extra) < 3 or "rw" not in fields[5].split(","):
            continue
        if extra[0] == "cgroup2":
            found.setdefault("cgroup2", Path(fields[4]))
        elif extra[0] == "cgroup" and "freezer" in extra[2].split(","):
            found.setdefault("freezer", Path(fields[4]))
    return found


def _own_cgroup(kind: str) -> str:
    """Our own cgroup path inside that hierarchy ('/' at the root): run cgroups go below it."""
    try:
        lines = (_PROC / "self/cgroup").read_text().splitlines()
    except OSError:
        return "/"
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if (kind == "cgroup2" and controllers == "") or (kind == "freezer" and "freezer" in controllers.split(",")):
            return path or "/"
    return "/"


def _usable(kind: str, mount: Path) -> Path | None:
    """The parent directory for run cgroups when we may create them there, else None."""
    parent = mount / _own_cgroup(kind).lstrip("/") / _GROUP_DIR
    probe = parent / f"probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        parent.mkdir(exist_ok=True)
        probe.mkdir()
        ok = (probe / "cgroup.procs").exists() and (kind != "cgroup2" or (probe / "cgroup.kill").exists())
        probe.rmdir()
    except OSError:
        return None
    return parent if ok else None


def choose_tracking(wanted: str = "auto") -> tuple[str, Path | None]:
    """(kind, parent dir for run cgroups). `wanted` forces one kind; it falls back to environ if unusable."""
    if wanted not in TRACKING:
        raise ValueError(f"process tracking must be one of {', '.join(TRACKING)}, got {wanted!r}")
    mounts = _mounts()
    for kind in ("cgroup2", "freezer"):
        if wanted in ("auto", kind) and kind in mounts:
            parent = _usable(kind, mounts[kind])
            if parent is not None:
                return kind, parent
    if wanted not in ("auto", "environ"):
        log.warning("process tracking %s is not usable here; tracking runs by environment marker", wanted)
    return "environ", None


def _state(pid: int) -> str | None:
    """The process state letter (R, S, D, Z, ...) or None when there is no such process."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def _live(pid: int) -> bool:
    return _state(pid) not in (None, "Z", "X")


def _start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot): with the pid, it names one process for good."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return int(fields[19]) if len(fields) > 19 else None


def this_process() -> dict[str, Any]:
    """Who owns a run: host, boot, pid and start time of this (worker) process."""
    me = os.getpid()
    return {"host": host_name(), "boot_id": boot_id(), "owner": {"pid": me, "start": _start_ticks(me)}}


def owner_alive(record: dict[str, Any]) -> bool:
    """True when the process that `this_process()` described is still running on this host (pid reuse aside)."""
    owner = record.get("owner") or {}
    if record.get("host") != host_name() or record.get("boot_id") != boot_id() or "pid" not in owner:
        return False
    pid = int(owner["pid"])
    return _live(pid) and _start_ticks(pid) == owner.get("start")


@dataclass(frozen=True)
class RunProcesses:
    kind: str  # cgroup2 | freezer | environ
    marker: str
    host: str
    boot_id: str
    cgroup: Path | None = None  # the run's own cgroup directory (absolute)

    # ------------------------------------------------------------------ making one
    @classmethod
    def create(cls, ident: str, kind: str, parent: Path | None) -> RunProcesses:
        marker = f"{ident}-{secrets.token_hex(12)}"
        cgroup: Path | None = None
        if kind != "environ" and parent is not None:
            cgroup = parent / f"run-{marker}"
            try:
                cgroup.mkdir()
            except OSError as e:
                log.warning("cannot create cgroup %s (%s); tracking run %s by environment marker",
                            cgroup, e.strerror, ident)
                kind, cgroup = "environ", None
        else:
            kind = "environ"
        return cls(kind=kind, marker=marker, host=host_name(), boot_id=boot_id(), cgroup=cgroup)

    def as_record(self) -> dict[str, Any]:
        return {"kind": self.kind, "marker": self.marker, "host": self.host, "boot_id": self.boot_id,
                "cgroup": str(self.cgroup) if self.cgroup else None}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RunProcesses:
        cgroup = record.get("cgroup")
        return cls(kind=str(record["kind"]), marker=str(record["marker"]), host=str(record.get("host") or ""),
                   boot_id=str(record.get("boot_id") or ""), cgroup=Path(cgroup) if cgroup else None)

    # ------------------------------------------------------------------ starting inside it
    def env(self) -> dict[str, str]:
        return {MARKER_ENV: self.marker}

    def wrap(self, argv: list[str]) -> list[str]:
        """argv prefixed so the process joins the run's cgroup before it execs (or fails, never escapes)."""
        if self.cgroup is None:
            return list(argv)
        script = 'echo $$ > "$0" || { echo "runbook-bot: cannot join cgroup $0" >&2; exit 125; }; exec "$@"'
        return ["/bin/sh", "-c", script, str(self.cgroup / "cgroup.procs"), *argv]

    # ------------------------------------------------------------------ finding it
    @property
    def local(self) -> bool:
        """True when the run's processes (if any) are on this host in this boot."""
        return self.host == host_name() and (not self.boot_id or self.boot_id == boot_id())

    def _cgroup_pids(self) -> set[int]:
        if self.cgroup is None:
            return set()
        try:
            text = (self.cgroup / "cgroup.procs").read_text()
        except OSError:
            return set()
        return {int(x) for x in text.split()}

    def _marked_pids(self) -> set[int]:
        needle = f"{MARKER_ENV}={self.marker}\0".encode()
        me, found = os.getpid(), set()
        for entry in os.scandir(_PROC):
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as f:
                    if needle in f.read():
                        found.add(int(entry.name))
            except OSError:
                continue
        return found

    def _member(self, pid: int) -> bool:
        if pid in self._cgroup_pids():
            return True
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                return f"{MARKER_ENV}={self.marker}\0".encode() in f.read()
        except OSError:
            return False

    def pids(self) -> list[int]:
        """Live (not zombie) processes of the run on this host."""
        if not self.local:
            return []
        return sorted(p for p in self._cgroup_pids() | self._marked_pids() if _live(p))

    def alive(self) -> bool:
        return bool(self.pids())

    # ------------------------------------------------------------------ ending it
    def _signal(self, pids: list[int], sig: signal.Signals) -> None:
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue  # already gone
            try:
                if self._member(pid):  # checked after the pidfd is open: a reused pid is never signalled
                    signal.pidfd_send_signal(fd, sig)
            except OSError:
                pass
            finally:
                os.close(fd)

    def _wait_empty(self, seconds: float) -> list[int]:
        deadline = time.monotonic() + seconds
        while True:
            left = self.pids()
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.05)

    def _kill_all(self) -> None:
        if self.kind == "cgroup2" and self.cgroup is not None:
            with contextlib.suppress(OSError):
                (self.cgroup / "cgroup.kill").write_text("1")
        elif self.kind == "freezer" and self.cgroup is not None:
            state = self.cgroup / "freezer.state"
            try:
                state.write_text("FROZEN")
                deadline = time.monotonic() + 2
                while state.read_text().strip() != "FROZEN" and time.monotonic() < deadline:
                    time.sleep(0.01)
                self._signal(self.pids(), signal.SIGKILL)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    state.write_text("THAWED")
        # marker-found processes (all kinds: outside the cgroup, or no cgroup at all); repeat while new ones
        # appear (a process may fork between the scan and the kill)
        for _ in range(20):
            left = self.pids()
            if not left:
                return
            self._signal(left, signal.SIGKILL)
            time.sleep(0.02)

    def end(self, grace: float = 5.0, kill_wait: float = 10.0) -> list[int]:
        """SIGTERM every process of the run, SIGKILL after `grace` s; the pids still alive (normally none)."""
        left = self.pids()
        if not left:
            return []
        log.info("ending %d process(es) of run %s (%s)", len(left), self.marker.split("-")[0], self.kind)
        self._signal(left, signal.SIGTERM)
        if not self._wait_empty(grace):
            return []
        self._kill_all()
        left = self._wait_empty(kill_wait)
        if left:
            log.warning("run %s: processes %s survived SIGKILL (stuck in the kernel?)", self.marker, left)
        return left

    def release(self) -> None:
        """Remove the run's (empty) cgroup directory."""
        if self.cgroup is not None and self.local:
            with contextlib.suppress(OSError):
                self.cgroup.rmdir()
