"""Spine fixtures: a database with two roles (the owner that migrates, the runtime role the bot uses)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from bot.composition import build_cli
from bot.config import Settings
from bot.spine import Spine
from tests.support.pgcluster import PgCluster


@pytest.fixture
def two_roles(pg_server: PgCluster) -> Iterator[dict[str, str]]:
    """A fresh database owned by an owner role, and a runtime login role with no rights yet."""
    tag = uuid.uuid4().hex[:10]
    owner, runtime, name = f"own_{tag}", f"rt_{tag}", f"t_{tag}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {owner} LOGIN PASSWORD 'owner-pw'")
        conn.execute(f"CREATE ROLE {runtime} LOGIN PASSWORD 'runtime-pw'")
        conn.execute(f'CREATE DATABASE "{name}" OWNER {owner}')
    yield {"DATABASE_URL": pg_server.dsn(name, runtime, "runtime-pw"),
           "RUNBOOK_BOT_MIGRATION_URL": pg_server.dsn(name, owner, "owner-pw"),
           "superuser": pg_server.dsn(name), "runtime": runtime}
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f"DROP ROLE {runtime}")
        conn.execute(f"DROP ROLE {owner}")


@pytest.fixture
def runtime_ctx(spine_env: dict[str, str], two_roles: dict[str, str],
                monkeypatch: pytest.MonkeyPatch) -> Iterator[Spine]:
    """The spine over the test catalog, migrated by the owner role and running as the runtime role."""
    env = {**spine_env, "DATABASE_URL": two_roles["DATABASE_URL"],
           "RUNBOOK_BOT_MIGRATION_URL": two_roles["RUNBOOK_BOT_MIGRATION_URL"]}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    context = build_cli(Settings.from_env(env))
    yield context
    context.close()
