"""Assembling the spine from Settings: database (embedded by default), migrations, catalog, service."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bot.catalog_files import load_catalog
from bot.config import Settings, load_directory
from bot.execution.runner import AnsibleRunner
from bot.execution.worker import WorkerPool
from bot.service import RunService
from bot.storage.database import Database, database_url, migrate
from bot.storage.keys import Keys
from bot.storage.spool import OutcomeSpool


@dataclass
class Context:
    settings: Settings
    db: Database
    service: RunService

    def worker_pool(self, size: int | None = None) -> WorkerPool:
        s = self.settings
        return WorkerPool(self.service, self.db, size=size or s.workers, poll_seconds=s.poll_seconds,
                          heartbeat_seconds=s.heartbeat_seconds, stale_after_seconds=s.stale_after_seconds)

    def close(self) -> None:
        self.db.close()


def _ansible_config(playbooks_dir: Path) -> Path | None:
    if os.environ.get("ANSIBLE_CONFIG"):
        return None  # the operator chose one; ansible-runner passes the environment through
    candidate = playbooks_dir.parent / "ansible.cfg"
    return candidate if candidate.exists() else None


def build(settings: Settings | None = None, *, pool_size: int = 8) -> Context:
    """Everything a front end needs. Raises RunbookBotError subclasses with one-line messages."""
    settings = settings or Settings.from_env()
    catalog = load_catalog(settings.runbooks_dir, settings.playbooks_dir)
    directory = load_directory(settings.config_file)
    keys = Keys.load(settings.home)
    db = Database(database_url(settings.database_url, settings.home), max_size=pool_size)
    try:
        migrate(db)
    except Exception:
        db.close()
        raise
    runner = AnsibleRunner(settings.work_dir, settings.artifacts_dir,
                           ansible_config=_ansible_config(settings.playbooks_dir),
                           tracking=settings.process_tracking, kill_grace_seconds=settings.kill_grace_seconds)
    service = RunService(db=db, catalog=catalog, directory=directory, keys=keys, runner=runner,
                         playbooks_dir=settings.playbooks_dir, inventory=settings.inventory,
                         spool=OutcomeSpool(settings.home / "outcomes"))
    return Context(settings, db, service)
