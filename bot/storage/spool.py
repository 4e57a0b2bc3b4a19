"""Outcomes not yet in the database: one 0600 JSON file per run under RUNBOOK_BOT_HOME/outcomes.

When PostgreSQL is down at the moment a playbook ends, the worker writes the (already redacted) final
transition here before it starts retrying, so the outcome survives the worker too: a restarted worker
records it (`pending()`), and the stale sweeper of this host records it instead of calling the run
interrupted. A file is removed once its transition is committed (or the run turned out to be final).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any


class OutcomeSpool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, run_id: int) -> Path:
        return self.directory / f"{int(run_id)}.json"

    def put(self, run_id: int, outcome: dict[str, Any]) -> None:
        """Write durably (temp file, fsync, rename, fsync of the directory)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        tmp = self.directory / f".{int(run_id)}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"run_id": int(run_id), **outcome}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path(run_id))
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def get(self, run_id: int) -> dict[str, Any] | None:
        try:
            data = json.loads(self._path(run_id).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def pending(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        return sorted(int(p.stem) for p in self.directory.glob("*.json") if p.stem.isdigit())

    def remove(self, run_id: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(run_id).unlink()
