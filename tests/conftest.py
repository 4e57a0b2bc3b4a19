"""Root fixtures: every test sees the project's venv tools (ansible-playbook, runbook-bot, kubectl) on PATH;
fixtures shared by several feature dirs are plugins in tests/support."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.support.paths import ROOT

pytest_plugins = ["tests.support.kube", "tests.support.rotation"]

_BIN = str(Path(sys.executable).parent)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")
os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
