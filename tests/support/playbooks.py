"""Running the repository's playbooks for real (ansible-playbook, JSON callback) and loading its Ansible
modules as Python modules for unit tests of their helpers."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.module_utils import module_util
from tests.support.paths import ROOT

BIN = Path(sys.executable).parent


@dataclass
class PlaybookRun:
    """One ansible-playbook run: exit code, custom stats, failed tasks (name, msg) and all output."""

    rc: int
    stats: dict[str, Any]
    failed: list[tuple[str, str]] = field(default_factory=list)  # (task name, message)
    output: str = ""


def run_playbook(playbook: str, extra: dict[str, Any] | list[str], *, check: bool = False) -> PlaybookRun:
    """Run playbooks/<playbook> with ansible-playbook for real; extra is a dict (JSON) or raw -e strings."""
    args = [str(BIN / "ansible-playbook"), "-i", "inventory/local", f"playbooks/{playbook}"]
    if isinstance(extra, dict):
        args += ["-e", json.dumps(extra)]
    else:
        for item in extra:
            args += ["-e", item]
    if check:
        args.append("--check")
    env = {
        **os.environ,
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_SHOW_CUSTOM_STATS": "true",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    try:
        doc = json.loads(proc.stdout[proc.stdout.index("{") :])
    except ValueError:
        return PlaybookRun(proc.returncode, {}, [("(no json)", proc.stderr)], proc.stdout + proc.stderr)
    failed = [
        (task["task"]["name"], str(host.get("msg", "")))
        for play in doc.get("plays", [])
        for task in play.get("tasks", [])
        for host in task.get("hosts", {}).values()
        if host.get("failed") and not host.get("ignore_errors")
    ]
    return PlaybookRun(proc.returncode, doc.get("global_custom_stats", {}), failed, proc.stdout + proc.stderr)


def failed_messages(output: dict[str, Any]) -> list[str]:
    """The msg of every failed task result in ansible.posix.json callback output."""
    return [
        str(res.get("msg", ""))
        for play in output.get("plays", [])
        for task in play.get("tasks", [])
        for res in task.get("hosts", {}).values()
        if res.get("failed")
    ]


def load_playbook_module(relative: str) -> Any:
    """playbooks/<relative> (an Ansible module or module_utils file) imported as a Python module."""
    module_util("runbook_module")  # playbooks/module_utils found as `ansible.module_utils.*`, as Ansible ships it
    path = ROOT / "playbooks" / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
