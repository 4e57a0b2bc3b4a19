"""The shipped db-connections runbook, through the spine with the real catalog, against a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bot.composition import build_cli
from bot.config import Settings
from bot.domain.runs import RunState
from bot.service import LocalTracker
from bot.spine import Spine
from tests.support.paths import ROOT
from tests.support.pgcluster import PgCluster
from tests.support.spine import op

pytestmark = pytest.mark.slow


@pytest.fixture
def real_catalog(spine_env: dict[str, str], pg_server: PgCluster,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[Spine]:
    env = {**spine_env, "RUNBOOK_BOT_RUNBOOKS": str(ROOT / "runbooks"),
           "RUNBOOK_BOT_PLAYBOOKS": str(ROOT / "playbooks"),
           "APP_DB_HOST": "127.0.0.1", "APP_DB_PORT": str(pg_server.port), "APP_DB_USER": "postgres",
           "APP_DB_NAME": "postgres", "APP_DB_PASSWORD": pg_server.password}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    ctx = build_cli(Settings.from_env(env))
    yield ctx
    ctx.close()


def test_reports_connections_per_state_against_the_limit(real_catalog: Spine, pg_server: PgCluster) -> None:
    """Idle and idle-in-transaction sessions are counted per database and state, against max_connections."""
    with psycopg.connect(pg_server.dsn()) as idle, psycopg.connect(pg_server.dsn()) as leaky:
        idle.execute("SELECT 1")
        idle.commit()
        leaky.execute("SELECT 1")  # left open: idle in transaction
        res = real_catalog.service.request("db-connections", {"warn_percent": "50"}, op(real_catalog, "alice"))
        assert res.run.state is RunState.QUEUED  # read-only: no approval
        done = real_catalog.service.execute_next("test", LocalTracker())
    assert done is not None and done.state is RunState.SUCCEEDED, done.error
    assert done.result["max_connections"] == 300
    states = {(r["database"], r["state"]) for r in done.result["per_state"]}
    assert ("postgres", "idle in transaction") in states
    assert ("postgres", "idle") in states
    assert done.summary[0].startswith(f"{done.result['in_use']} of 297 usable connections in use")
    assert Path(ROOT / "runbooks" / "db-connections.md").exists()
