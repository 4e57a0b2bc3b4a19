"""The composition roots: one function per process kind builds everything that process runs.

    build_cli(settings)              one-shot commands (runbooks, show, request, approve, status, audit, ...)
    build_worker(settings, ...)      `runbook-bot worker`: the spine and a worker pool that prints runs
    build_scheduler(settings, ...)   `runbook-bot scheduler`: the scheduler and /healthz, /metrics
    build_serve(settings, ...)       `runbook-bot serve`: Slack, workers, the scheduler and the HTTP port

Each receives everything it depends on (settings, where to print, the options of its verb) and hands
every object the next one needs to its constructor: nothing is set on an object after it is built, and
no module keeps a registry. Nothing here starts anything: bot.server runs what build_serve and
build_scheduler return, bot.cli the rest. Raises RunbookBotError subclasses with one-line messages.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from bot import console
from bot.catalog_files import load_catalog
from bot.config import Settings, load_directory
from bot.demo import drill_vars
from bot.domain.policy import SlackGroups
from bot.errors import CatalogError, ConfigError
from bot.execution.runner import AnsibleRunner
from bot.execution.worker import WorkerPool
from bot.ports import ProgressListener, RunListener
from bot.scheduler import start as start_scheduler
from bot.service import RunService
from bot.spine import Spine
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

if TYPE_CHECKING:
    from bot.server import Histogram, ServeProcess, SlackFront

log = logging.getLogger(__name__)


def build_cli(settings: Settings) -> Spine:
    """The spine for one command (`request`, `approve`, `status`, `audit verify`, ...): nothing runs in the
    background and nothing is printed for run events."""
    return open_spine(settings)


@dataclass
class WorkerProcess:
    """`runbook-bot worker`: a pool (not started) over the spine; its run events are printed on `out`."""

    spine: Spine
    pool: WorkerPool

    def close(self) -> None:
        self.spine.close()


def build_worker(settings: Settings, *, concurrency: int | None, out: TextIO) -> WorkerProcess:
    """`concurrency` slots (None: RUNBOOK_BOT_WORKERS); transitions and task progress printed on `out`."""
    runs, progress = _printers(out)
    spine = open_spine(settings, run_listeners=runs, progress_listeners=progress)
    return WorkerProcess(spine, spine.worker_pool(concurrency))


def build_scheduler(settings: Settings, *, http_port: int | None, out: TextIO) -> ServeProcess:
    """The scheduler alone, with /healthz and /metrics on `http_port`: no Slack, no workers."""
    return build_serve(settings, http_port=http_port, workers=False, scheduler=True, slack=False, out=out)


def build_serve(settings: Settings, *, http_port: int | None, workers: bool, scheduler: bool, slack: bool,
                out: TextIO) -> ServeProcess:
    """Slack (Socket Mode when SLACK_APP_TOKEN is set, else HTTP on `http_port`), a worker pool, the
    scheduler and the HTTP port, as asked; run events printed on `out`. Binds the port (a port in use is a
    one-line ConfigError) and, with Slack, calls auth.test; starts nothing."""
    from bot.server import Histogram, ServeProcess, http_server  # waitress: only for the processes that serve

    slack_off = "SLACK_BOT_TOKEN is not set" if slack and not settings.slack_bot_token else None
    with_slack = slack and slack_off is None
    socket_mode = bool(settings.slack_app_token)
    if with_slack and not socket_mode and http_port is None:
        raise ConfigError("Slack in HTTP mode needs --http PORT (or set SLACK_APP_TOKEN for Socket Mode)")
    client: Any = None
    slack_groups: SlackGroups | None = None
    if with_slack:
        from bot.slack.app import make_client
        from bot.slack.groups import SlackGroupResolver

        client = make_client(settings)
        slack_groups = SlackGroupResolver(client)
    runs, progress = _printers(out)
    spine = open_spine(settings, slack_groups=slack_groups, run_listeners=runs, progress_listeners=progress)
    ack_latency = Histogram("runbook_bot_slack_ack_seconds", "Time to acknowledge a Slack request.")
    front: SlackFront | None = None
    try:
        if client is not None:
            front = _slack_front(settings, spine.service, client, ack_latency, socket_mode=socket_mode)
        http_app = front.app if front is not None and front.socket_handler is None else None  # Socket Mode: no door
        httpd = http_server(spine, http_app, http_port, ack_latency) if http_port is not None else None
    except BaseException:
        if front is not None:
            for lane in front.lanes:
                lane.shutdown(wait=False)
        spine.close()
        raise
    sinks = [front.notifier.alert] if front is not None else []  # stale-drill alerts go to Slack too
    return ServeProcess(
        spine=spine, ack_latency=ack_latency, http=httpd, slack=front, slack_off=slack_off,
        pool=spine.worker_pool() if workers else None,
        start_scheduler=partial(start_scheduler, spine, alert_sinks=sinks) if scheduler else None,
    )


def _slack_front(settings: Settings, service: RunService, client: Any, ack_latency: Histogram, *,
                 socket_mode: bool) -> SlackFront:
    from bot.server import SLACK_PLAN_THREADS, SLACK_QUICK_THREADS, SlackFront, socket_mode_handler
    from bot.slack.app import approval_channel, create_app
    from bot.slack.notifier import Notifier

    plans = ThreadPoolExecutor(max_workers=SLACK_PLAN_THREADS, thread_name_prefix="runbook-slack-plan")
    quick = ThreadPoolExecutor(max_workers=SLACK_QUICK_THREADS, thread_name_prefix="runbook-slack-quick")
    try:
        app = create_app(settings, service, executor=plans, quick_executor=quick, socket_mode=socket_mode,
                         client=client)
        handler = None
        if socket_mode:
            assert settings.slack_app_token is not None
            handler = socket_mode_handler(app, settings.slack_app_token, ack_latency)
    except BaseException:
        plans.shutdown(wait=False)
        quick.shutdown(wait=False)
        raise
    channel = approval_channel(settings, service)
    return SlackFront(app=app, notifier=Notifier(client, service, channel), approval_channel=channel,
                      lanes=[plans, quick], socket_handler=handler)


def _printers(out: TextIO) -> tuple[list[RunListener], list[ProgressListener]]:
    """What `worker` and `serve` print on their terminal (bot.console), as the service's listeners."""
    return [console.result_printer(out)], [console.progress_printer(out)]


# ----------------------------------------------------------------------------- the spine
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


def open_spine(settings: Settings, *, slack_groups: SlackGroups | None = None,
               run_listeners: Sequence[RunListener] = (), progress_listeners: Sequence[ProgressListener] = (),
               pool_size: int = 8) -> Spine:
    """Catalog, operators file, keys, database (migrated), playbook runner and the RunService over them.

    `slack_groups`: how Slack user groups named in the operators file are resolved (serve's Slack client);
    `run_listeners` / `progress_listeners`: told about every run transition / task line.
    """
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
                         keys=keys, runner=runner, playbooks_dir=settings.playbooks_dir, inventory=settings.inventory,
                         slack_groups=slack_groups, run_listeners=list(run_listeners),
                         progress_listeners=list(progress_listeners),
                         anchors=Anchorer(db, keys.anchor_hmac, sinks), spool=OutcomeSpool(settings.home / "outcomes"))
    return Spine(settings, db, service, warnings)


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
