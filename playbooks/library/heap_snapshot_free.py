#!/usr/bin/python
"""Ansible module: free space of the filesystem holding a directory (the controller's temp dir)."""

from __future__ import annotations

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: heap_snapshot_free
short_description: Free bytes on the filesystem that holds a directory
description:
  - Reports the bytes available to unprivileged users on the filesystem of O(path), so a heap
    snapshot is not copied onto a disk too small for it. Read only; works in check mode.
options:
  path:
    description: Directory to measure. Default is the system temporary directory (C(TMPDIR), C(/tmp)).
    type: path
author: runbook-bot
"""

EXAMPLES = r"""
- name: Free space in the controller's temp dir
  heap_snapshot_free:
  register: free
"""

RETURN = r"""
path: {description: The directory measured., returned: always, type: str}
free_bytes: {description: Bytes available on its filesystem., returned: always, type: int}
"""


def main() -> None:
    module = AnsibleModule(argument_spec={"path": {"type": "path"}}, supports_check_mode=True)
    path = module.params["path"] or tempfile.gettempdir()
    try:
        st = os.statvfs(path)
    except OSError as e:
        module.fail_json(msg=f"cannot measure free space of {path}: {e}")
    module.exit_json(changed=False, path=path, free_bytes=st.f_bavail * st.f_frsize)


if __name__ == "__main__":
    main()
