"""Integration fixtures: a real PostgreSQL 15 server per session, a fresh database per test, and the
spine assembled exactly as the CLI assembles it (bot.composition.build_cli) over a test catalog."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bot.composition import build_cli
from bot.config import Settings
from bot.domain.policy import Operator
from bot.domain.runs import Run
from bot.spine import Spine
from tests.support.pgcluster import PgCluster, make_tmp_dir, remove_tree

ROOT = Path(__file__).resolve().parents[2]
SPINE_CATALOG = Path(__file__).resolve().parent / "spine" / "catalog"


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
        "RUNBOOK_BOT_HOME": str(tmp_path / "home"),
        "RUNBOOK_BOT_RUNBOOKS": str(SPINE_CATALOG / "runbooks"),
        "RUNBOOK_BOT_PLAYBOOKS": str(SPINE_CATALOG / "playbooks"),
        "RUNBOOK_BOT_CONFIG": str(SPINE_CATALOG / "operators.yaml"),
        "RUNBOOK_BOT_INVENTORY": str(ROOT / "inventory" / "local"),
        "RUNBOOK_BOT_SECRET_KEY": "test-master-key-" + uuid.uuid4().hex,
        "RUNBOOK_BOT_HEARTBEAT_SECONDS": "0.5",
        "RUNBOOK_BOT_POLL_SECONDS": "0.2",
        "DATABASE_URL": database_url,
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


class RealSpine:
    def __init__(self, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
        self.env, self._mp, self._ctx = env, monkeypatch, None  # type: ignore[var-annotated]

    def build(self, **extra: str) -> Spine:
        self.env.update(extra)
        for k, v in self.env.items():
            self._mp.setenv(k, v)
        self._ctx = build_cli(Settings.from_env(self.env))
        return self._ctx

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.close()


def drain(ctx: Spine) -> list[Run]:
    """Execute every queued run in this process (the worker's code path, without threads)."""
    from bot.service import LocalTracker

    done = []
    while (run := ctx.service.execute_next("test", LocalTracker())) is not None:
        done.append(run)
    return done


def op(ctx: Spine, name: str) -> Operator:
    return ctx.service.directory.operator(name)


def ran(spine_env: dict[str, str]) -> list[str]:
    """Lines the test playbooks wrote: one per real execution."""
    path = Path(spine_env["SPINE_TEST_LOG"])
    return path.read_text().splitlines() if path.exists() else []


def cli(env: dict[str, str], *args: str, user: str = "alice", timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real `runbook-bot` command as `user` (getpass.getuser() reads LOGNAME)."""
    full = {**os.environ, **env, "LOGNAME": user, "USER": user}
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], env=full, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
