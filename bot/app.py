"""Assembling the spine from Settings: database (embedded by default), migrations, catalog, service."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.catalog_files import load_catalog
from bot.config import Settings, load_directory
from bot.demo import drill_vars
from bot.errors import CatalogError, ConfigError
from bot.execution.runner import AnsibleRunner
from bot.execution.worker import WorkerPool
from bot.service import RunService
from bot.storage.anchors import Anchorer, sinks_from_settings
from bot.storage.database import (
    Database,
    current_role,
    embedded_database_url,
    embedded_status,
    ensure_embedded_runtime_role,
    migrate,
    ownership_warning,
)
from bot.storage.keys import Keys
from bot.storage.run_store import PostgresRunStore
from bot.storage.spool import OutcomeSpool

log = logging.getLogger(__name__)


@dataclass
class Context:
    settings: Settings
    db: Database
    service: RunService
    warnings: list[str] = field(default_factory=list)  # operator warnings (serve/worker and audit verify show them)

    def worker_pool(self, size: int | None = None) -> WorkerPool:
        s = self.settings
        return WorkerPool(self.service, size=size or s.workers, poll_seconds=s.poll_seconds,
                          heartbeat_seconds=s.heartbeat_seconds, stale_after_seconds=s.stale_after_seconds)

    def close(self) -> None:
        if self.service.anchors is not None:
            self.service.anchors.close()  # background anchors (S3) get a bounded chance to finish
        self.db.close()


def _ansible_config(playbooks_dir: Path) -> Path | None:
    if os.environ.get("ANSIBLE_CONFIG"):
        return None  # the operator chose one; ansible-runner passes the environment through
    candidate = playbooks_dir.parent / "ansible.cfg"
    return candidate if candidate.exists() else None


def inventory_defaults(settings: Settings) -> dict[str, Any]:
    """What this bot knows about its own machine, for playbooks (the environment's inventory overrides it).

    `runbook_bot_embedded_db`: the embedded PostgreSQL (socket dir, port, superuser; no password: trust on
    its socket), only when it is the bot's database. The inventory points db-connections at it by default.
    Never DATABASE_URL: its credentials are the bot's own. After `runbook-bot demo up`, the restore drill's
    settings for the demo stanza (bot.demo).
    """
    facts: dict[str, Any] = dict(drill_vars(settings.home))
    if not settings.database_url:
        st = embedded_status(settings.home)
        if st.socket_dir is not None:
            facts["runbook_bot_embedded_db"] = {"host": str(st.socket_dir), "port": st.port, "user": "postgres",
                                                "database": "postgres"}
    return facts


def build(settings: Settings | None = None, *, pool_size: int = 8) -> Context:
    """Everything a front end needs. Raises RunbookBotError subclasses with one-line messages."""
    settings = settings or Settings.from_env()
    try:
        catalog = load_catalog(settings.runbooks_dir, settings.playbooks_dir)
        directory = load_directory(settings.config_file)
    except (CatalogError, ConfigError) as e:
        if settings.project_search and not settings.runbooks_dir.is_dir():
            raise ConfigError(f"{settings.runbooks_dir}: is not a directory ({settings.project_search}): run "
                              "from the project directory or set RUNBOOK_BOT_RUNBOOKS") from None
        if settings.project_search and not settings.config_file.exists():
            raise ConfigError(f"{e} ({settings.project_search})") from None
        raise
    # The key of the environment the settings came from (signing events with another key than the
    # worker's would get every run refused by the approval check).
    keys = Keys.load(settings.home, {"RUNBOOK_BOT_SECRET_KEY": settings.secret_key} if settings.secret_key else None)
    sinks = sinks_from_settings(settings.audit_anchor_file, settings.audit_anchor_s3)
    db, warnings = open_database(settings, pool_size=pool_size)
    runner = AnsibleRunner(settings.work_dir, settings.artifacts_dir,
                           ansible_config=_ansible_config(settings.playbooks_dir),
                           inventory_defaults=lambda: inventory_defaults(settings),
                           tracking=settings.process_tracking, kill_grace_seconds=settings.kill_grace_seconds)
    service = RunService(store=PostgresRunStore(db, keys.event_mac_key), catalog=catalog, directory=directory,
                         keys=keys, runner=runner,
                         playbooks_dir=settings.playbooks_dir, inventory=settings.inventory,
                         anchors=Anchorer(db, keys.anchor_hmac, sinks), spool=OutcomeSpool(settings.home / "outcomes"))
    return Context(settings, db, service, warnings)


def open_database(settings: Settings, *, pool_size: int = 8) -> tuple[Database, list[str]]:
    """The runtime pool, after migrations ran as the owner role (two roles: README, 'Database roles').

    Embedded default: the embedded superuser migrates, the bot connects as a login role that owns
    nothing. DATABASE_URL alone: migrations run over it, as before, with a warning when that role owns
    the tables; with RUNBOOK_BOT_MIGRATION_URL too, migrations run there and DATABASE_URL's role gets
    only the privileges the bot needs.
    """
    owner_url = settings.migration_url
    if settings.database_url:
        runtime_url = settings.database_url
    else:
        owner_url = embedded_database_url(settings.home)
        runtime_url = ensure_embedded_runtime_role(settings.home, owner_url)
    db = Database(runtime_url, max_size=pool_size)
    warnings: list[str] = []
    try:
        if owner_url is None:
            migrate(db)
        else:
            setting = "RUNBOOK_BOT_MIGRATION_URL" if settings.database_url else "the embedded database"
            with Database(owner_url, min_size=1, max_size=1, setting=setting) as owner:
                migrate(owner, runtime_role=current_role(db))
        warning = ownership_warning(db)
    except Exception:
        db.close()
        raise
    if warning is not None:
        log.info("%s", warning)
        warnings.append(warning)
    return db, warnings
