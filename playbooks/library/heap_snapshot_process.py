#!/usr/bin/python
"""Ansible module: inspect a Node.js process and make it write a heap snapshot (SIGUSR2)."""

from __future__ import annotations

import os
import re
import signal
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.heap_snapshot_node import (
    APPEAR_SECONDS,
    HEAP_SNAPSHOT_RE,
    looks_complete,
    parse_environ,
    parse_rss,
    refusal,
    snapshot_settings,
)

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
        module.fail_json(msg="give exactly one of pid and process_match")
    if pid is not None:
        if pid <= 0 or not os.path.isdir(f"/proc/{pid}"):
            module.fail_json(msg=f"no process with pid {pid} on this host")
        return int(pid)
    try:
        rx = re.compile(pattern)
    except re.error as e:
        module.fail_json(msg=f"process_match is not a valid regular expression: {e}")
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
        module.fail_json(
            msg=f"process_match must match exactly one process on this host; it matches {len(matches)}"
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


def inspect(module: AnsibleModule, pid: int) -> dict:
    what = f"process {pid} ({_comm(pid)})"
    try:
        argv = _argv(pid)
        start = _start_time(pid)
    except OSError as e:
        module.fail_json(msg=f"cannot read /proc/{pid}: {e}")
    if module.params["start_time"] and module.params["start_time"] != start:
        module.fail_json(msg=f"pid {pid} is now a different process (it restarted); refusing to signal it")
    try:
        environ: bytes | None = _read(f"/proc/{pid}/environ")
    except OSError:
        environ = None
    settings = snapshot_settings(argv, parse_environ(environ) if environ is not None else None)
    reason = refusal(settings, what)
    if reason:
        if environ is None and settings["signal"] is None:
            reason += f" (could not read /proc/{pid}/environ: run as the process's user or root)"
        module.fail_json(msg=reason, pid=pid)
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError as e:
        module.fail_json(msg=f"cannot read the working directory of {what}: {e}")
    ddir, source = settings["diagnostic_dir"], settings["diagnostic_dir_source"]
    if ddir:
        ddir = os.path.normpath(os.path.join(cwd, ddir))
        source = f"--diagnostic-dir on the {source}" if source == "command line" else source
    else:
        ddir, source = cwd, "cwd"
    try:
        rss = parse_rss(_read(f"/proc/{pid}/status").decode("utf-8", "replace"))
        st = os.statvfs(ddir)
    except OSError as e:
        module.fail_json(msg=f"cannot inspect {what} or its diagnostic dir {ddir}: {e}")
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


def _snapshots(ddir: str) -> set[str]:
    return {n for n in os.listdir(ddir) if HEAP_SNAPSHOT_RE.match(n)}


def _tail(path: str) -> bytes:
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - 64))
        return f.read()


def capture(module: AnsibleModule, info: dict) -> dict:
    pid, ddir = info["pid"], info["diagnostic_dir"]
    before = _snapshots(ddir)
    started = time.monotonic()
    try:
        os.kill(pid, signal.SIGUSR2)
    except OSError as e:
        module.fail_json(msg=f"cannot signal pid {pid}: {e}", **info)
    deadline = started + module.params["timeout"]
    # Node creates the (empty) file as soon as it gets the signal, then builds and writes the snapshot:
    # no file within APPEAR_SECONDS means it is not coming (directory not writable by the process?).
    appear_by = started + min(APPEAR_SECONDS, module.params["timeout"])
    interval, needed = module.params["poll_interval"], module.params["stable_polls"]
    path, last, stable, changed_at = None, -1, 0, started
    while time.monotonic() < deadline:
        time.sleep(interval)
        if path is None:
            new = sorted(_snapshots(ddir) - before)
            mine = [n for n in new if f".{pid}." in n] or new
            if mine:
                path = os.path.join(ddir, max(mine, key=lambda n: os.path.getmtime(os.path.join(ddir, n))))
        if path is None:
            if not os.path.isdir(f"/proc/{pid}"):
                module.fail_json(msg=f"pid {pid} exited before writing a heap snapshot (OOM?)", **info)
            if time.monotonic() > appear_by:
                module.fail_json(msg=f"no heap snapshot file appeared in {ddir} within {APPEAR_SECONDS} s of "
                                 "SIGUSR2: can the process write there?", **info)
            continue
        size = os.path.getsize(path)
        if size != last:
            changed_at = time.monotonic()
        stable = stable + 1 if size == last and size > 0 else 0
        grew, last = size != last, size
        if stable >= needed and looks_complete(_tail(path)):
            # seconds = signal until the file stopped growing: about how long the process was frozen.
            return {"path": path, "name": os.path.basename(path), "size": size,
                    "seconds": round(changed_at - started, 3)}
        if not grew and not os.path.isdir(f"/proc/{pid}"):
            module.fail_json(msg=f"pid {pid} exited while writing {path}; the file is incomplete", path=path)
    module.fail_json(
        msg=f"no complete heap snapshot after {module.params['timeout']} s"
        + (f" ({path} is {last} bytes and still changing or incomplete)" if path else
           f" (no new .heapsnapshot file appeared in {ddir})"),
        path=path, **info,
    )
    return {}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "pid": {"type": "int"},
            "process_match": {"type": "str"},
            "state": {"type": "str", "choices": ["inspected", "captured"], "default": "inspected"},
            "start_time": {"type": "str"},
            "timeout": {"type": "int", "default": 900},
            "poll_interval": {"type": "float", "default": 1.0},
            "stable_polls": {"type": "int", "default": 3},
        },
        mutually_exclusive=[("pid", "process_match")],
        required_one_of=[("pid", "process_match")],
        supports_check_mode=True,
    )
    info = inspect(module, find_pid(module))
    if module.params["state"] == "inspected" or module.check_mode:
        module.exit_json(changed=False, **info)
    info.update(capture(module, info))
    module.exit_json(changed=True, **info)


if __name__ == "__main__":
    main()
