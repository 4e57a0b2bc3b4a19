"""Integration fixtures: a real PostgreSQL 15 server per session, a fresh database per test, and the
spine assembled exactly as the CLI assembles it (bot.composition.build_cli) over a test catalog."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bot.composition import build_cli
from bot.config import Settings
from bot.spine import Spine
from tests.support.paths import ROOT
from tests.support.pgcluster import PgCluster, make_tmp_dir, remove_tree
from tests.support.spine import SPINE_CATALOG, RealSpine, bot_env


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgCluster]:
    """One real PostgreSQL server for the session (fresh databases per test)."""
    base = make_tmp_dir("rb-pg-")
    cluster = PgCluster(base, conf={"max_connections": "300"}).start()
    try:
        yield cluster
    finally:
        cluster.stop("immediate")
        remove_tree(base)


@pytest.fixture
def database_url(pg_server: PgCluster) -> Iterator[str]:
    """A fresh, empty database on the session server."""
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_server.dsn(name)
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def spine_env(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment of a spine over the test catalog; also applied to this process (playbooks inherit it)."""
    target = tmp_path / "target"
    target.write_text("old\n")
    env = {
        **bot_env(tmp_path / "home", SPINE_CATALOG, database_url),
        "SPINE_TEST_LOG": str(tmp_path / "ran.log"),
        "SPINE_TEST_TARGET": str(target),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def ctx(spine_env: dict[str, str]) -> Iterator[Spine]:
    context = build_cli(Settings.from_env(spine_env))
    yield context
    context.close()


@pytest.fixture
def real_ctx(spine_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[RealSpine]:
    """The spine over the REAL catalog (runbooks/, playbooks/) with the test operators; `.build(**env)`
    sets extra environment (passed through to playbooks) and builds the context."""
    spine = RealSpine({**spine_env, "RUNBOOK_BOT_RUNBOOKS": str(ROOT / "runbooks"),
                       "RUNBOOK_BOT_PLAYBOOKS": str(ROOT / "playbooks")}, monkeypatch)
    yield spine
    spine.close()


