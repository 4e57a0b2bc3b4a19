#!/usr/bin/python
"""Ansible module: inspect a Node.js process and make it write a heap snapshot (SIGUSR2)."""

from __future__ import annotations

import os
import re
import signal
import time
from typing import Any

from ansible.module_utils import heap_snapshot_node as node
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.runbook_module import OperatorError, run

DOCUMENTATION = r"""
---
module: heap_snapshot_process
short_description: Make a Node.js process on this host write a heap snapshot
description:
  - Finds one Node.js process by O(pid) or by a regular expression on its command line
    (O(process_match), which must match exactly one process).
  - Refuses unless the process was started with C(--heapsnapshot-signal=SIGUSR2) (on its command line
    or in C(NODE_OPTIONS) read from C(/proc/<pid>/environ)); without it SIGUSR2 would not write a
    snapshot and its default action terminates the process.
  - Finds where Node writes the file (C(--diagnostic-dir), else the process's working directory), its
    resident set size, and the free space of that directory's filesystem.
  - With O(state=captured), sends SIGUSR2 and waits until a new C(.heapsnapshot) file appears and
    stops growing (and ends like a complete JSON document). The process is frozen while it writes.
  - Never returns the process's environment or full command line (they may hold secrets).
options:
  pid:
    description: Process id. Exactly one of O(pid) and O(process_match) is required.
    type: int
  process_match:
    description: Python regular expression searched in the command line (arguments joined by spaces).
    type: str
  state:
    description: V(inspected) only reads; V(captured) signals the process and waits for the file.
    type: str
    choices: [inspected, captured]
    default: inspected
  start_time:
    description: When set, refuse unless the process's start time (field 22 of /proc/<pid>/stat) is
      this value, so a reused pid is never signalled.
    type: str
  timeout:
    description: Seconds to wait for the snapshot to be complete.
    type: int
    default: 900
  poll_interval:
    description: Seconds between size polls.
    type: float
    default: 1.0
  stable_polls:
    description: Consecutive polls with an unchanged, non-zero size before the file counts as complete.
    type: int
    default: 3
author: runbook-bot
"""

EXAMPLES = r"""
- name: Snapshot the API process
  heap_snapshot_process:
    process_match: 'node .*dist/main\.js'
    state: captured
  register: snap
"""

RETURN = r"""
pid:
  description: Process id.
  returned: always
  type: int
start_time:
  description: Start time of the process (clock ticks since boot).
  returned: always
  type: str
command:
  description: Executable name and script (no other arguments).
  returned: always
  type: str
diagnostic_dir:
  description: Directory the snapshot is written to.
  returned: always
  type: str
diagnostic_dir_source:
  description: "C(--diagnostic-dir on the command line), C(NODE_OPTIONS) or C(cwd)."
  returned: always
  type: str
signal_source:
  description: Where --heapsnapshot-signal was found.
  returned: always
  type: str
rss_bytes:
  description: Resident set size of the process.
  returned: always
  type: int
free_bytes:
  description: Free bytes (for unprivileged users) on the diagnostic dir's filesystem.
  returned: always
  type: int
path:
  description: The snapshot file.
  returned: state=captured and not check mode
  type: str
name:
  description: Base name of the snapshot file.
  returned: state=captured and not check mode
  type: str
size:
  description: Size of the snapshot in bytes.
  returned: state=captured and not check mode
  type: int
seconds:
  description: Seconds from the signal until the file stopped growing (about how long the process was frozen).
  returned: captured
  type: float
"""


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _argv(pid: int) -> list[str]:
    raw = _read(f"/proc/{pid}/cmdline")
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0")[:-1]] if raw else []


def _ancestors() -> set[int]:
    """This module's own process and its parents: never candidates for process_match."""
    out, pid = set(), os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            stat = _read(f"/proc/{pid}/stat").decode()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def find_pid(module: AnsibleModule) -> int:
    pid, pattern = module.params["pid"], module.params["process_match"]
    if (pid is None) == (pattern is None):
        raise OperatorError("give exactly one of pid and process_match")
    if pid is not None:
        if pid <= 0 or not os.path.isdir(f"/proc/{pid}"):
            raise OperatorError(f"no process with pid {pid} on this host")
        return int(pid)
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise OperatorError(f"process_match is not a valid regular expression: {e}") from None
    skip = _ancestors()
    matches = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        try:
            argv = _argv(int(entry))
        except OSError:
            continue
        if argv and rx.search(" ".join(argv)):
            matches.append(int(entry))
    if len(matches) != 1:
        listed = ", ".join(f"{p} ({_comm(p)})" for p in sorted(matches)[:10])
        raise OperatorError(
            f"process_match must match exactly one process on this host; it matches {len(matches)}"
            + (f": {listed}" if matches else ""),
            matches=sorted(matches),
        )
    return matches[0]


def _comm(pid: int) -> str:
    try:
        return _read(f"/proc/{pid}/comm").decode("utf-8", "replace").strip()
    except OSError:
        return "?"


def _start_time(pid: int) -> str:
    stat = _read(f"/proc/{pid}/stat").decode("utf-8", "replace")
    return stat.rsplit(")", 1)[1].split()[19]


def inspect(module: AnsibleModule, pid: int) -> dict[str, Any]:
    what = f"process {pid} ({_comm(pid)})"
    try:
        argv = _argv(pid)
        start = _start_time(pid)
    except OSError as e:
        raise OperatorError(f"cannot read /proc/{pid}: {e}") from None
    if module.params["start_time"] and module.params["start_time"] != start:
        raise OperatorError(f"pid {pid} is now a different process (it restarted); refusing to signal it")
    try:
        environ: bytes | None = _read(f"/proc/{pid}/environ")
    except OSError:
        environ = None
    settings = node.snapshot_settings(argv, node.parse_environ(environ) if environ is not None else None)
    reason = node.refusal(settings, what)
    if reason:
        if environ is None and settings["signal"] is None:
            reason += f" (could not read /proc/{pid}/environ: run as the process's user or root)"
        raise OperatorError(reason, pid=pid)
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError as e:
        raise OperatorError(f"cannot read the working directory of {what}: {e}") from None
    ddir, source = settings["diagnostic_dir"], settings["diagnostic_dir_source"]
    if ddir:
        ddir = os.path.normpath(os.path.join(cwd, ddir))
        source = f"--diagnostic-dir on the {source}" if source == "command line" else source
    else:
        ddir, source = cwd, "cwd"
    try:
        rss = node.parse_rss(_read(f"/proc/{pid}/status").decode("utf-8", "replace"))
        st = os.statvfs(ddir)
    except OSError as e:
        raise OperatorError(f"cannot inspect {what} or its diagnostic dir {ddir}: {e}") from None
    script = next((a for a in argv[1:] if not a.startswith("-")), "")
    exe = os.path.basename(argv[0]) if argv else _comm(pid)
    return {
        "pid": pid,
        "start_time": start,
        "command": f"{exe} {os.path.basename(script)}".strip(),
        "diagnostic_dir": ddir,
        "diagnostic_dir_source": source,
        "signal_source": settings["signal_source"],
        "rss_bytes": rss or 0,
        "free_bytes": st.f_bavail * st.f_frsize,
    }


class HostDirectory:
    """The process's diagnostic directory on this host, as node.wait_for_snapshot polls it."""

    no_file_hint = "can the process write there?"

    def __init__(self, pid: int, directory: str) -> None:
        self.pid, self.directory = pid, directory
        self.before = self._snapshots()

    def _snapshots(self) -> set[str]:
        return {n for n in os.listdir(self.directory) if node.HEAP_SNAPSHOT_RE.match(n)}

    def new_file(self) -> str | None:
        new = sorted(self._snapshots() - self.before)
        mine = [n for n in new if f".{self.pid}." in n] or new
        if not mine:
            return None
        return os.path.join(self.directory, max(mine, key=lambda n: os.path.getmtime(os.path.join(self.directory, n))))

    def size(self, path: str) -> int:
        return os.path.getsize(path)

    def tail(self, path: str) -> bytes:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 64))
            return f.read()

    def check_alive(self, path: str | None) -> None:
        if os.path.isdir(f"/proc/{self.pid}"):
            return
        if path is None:
            raise OperatorError(f"pid {self.pid} exited before writing a heap snapshot (OOM?)")
        raise OperatorError(f"pid {self.pid} exited while writing {path}; the file is incomplete", path=path)


def capture(module: AnsibleModule, info: dict[str, Any]) -> dict[str, Any]:
    pid = info["pid"]
    source = HostDirectory(pid, info["diagnostic_dir"])
    started = time.monotonic()
    try:
        os.kill(pid, signal.SIGUSR2)
    except OSError as e:
        raise OperatorError(f"cannot signal pid {pid}: {e}", **info) from None
    try:
        snap = node.wait_for_snapshot(source, started, module.params["timeout"], module.params["poll_interval"],
                                 module.params["stable_polls"])
    except OperatorError as e:
        raise OperatorError(str(e), **{**info, **e.fields}) from None
    return {"path": snap.path, "name": os.path.basename(snap.path), "size": snap.size, "seconds": snap.seconds}


def snapshot(module: AnsibleModule) -> dict[str, Any]:
    info = inspect(module, find_pid(module))
    if module.params["state"] == "inspected" or module.check_mode:
        return {"changed": False, **info}
    info.update(capture(module, info))
    return {"changed": True, **info}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "pid": {"type": "int"},
            "process_match": {"type": "str"},
            "state": {"type": "str", "choices": ["inspected", "captured"], "default": "inspected"},
            "start_time": {"type": "str"},
            **node.POLL_OPTIONS,
        },
        mutually_exclusive=[("pid", "process_match")],
        required_one_of=[("pid", "process_match")],
        supports_check_mode=True,
    )
    run(module, lambda: snapshot(module))


if __name__ == "__main__":
    main()
