"""Import the project's Ansible module_utils (playbooks/module_utils) the way the modules do:
as `ansible.module_utils.<name>` (Ansible ships that directory with each module that uses it)."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import ansible.module_utils

MODULE_UTILS = Path(__file__).resolve().parents[2] / "playbooks" / "module_utils"


def module_util(name: str) -> ModuleType:
    """`ansible.module_utils.<name>` from playbooks/module_utils."""
    if str(MODULE_UTILS) not in ansible.module_utils.__path__:
        ansible.module_utils.__path__.append(str(MODULE_UTILS))
    return importlib.import_module(f"ansible.module_utils.{name}")
