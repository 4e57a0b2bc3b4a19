"""Root fixtures: every test sees the project's venv tools (ansible-playbook, runbook-bot, kubectl) on PATH."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_BIN = str(Path(sys.executable).parent)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")
os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
