"""Driving the spine from tests: the context over the real catalog (RealSpine), running queued runs in this
process (drain), operators (op), what the test playbooks did (ran) and the real `runbook-bot` command (cli)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bot.composition import build_cli
from bot.config import Settings
from bot.domain.policy import Operator
from bot.domain.runs import Run
from bot.spine import Spine
from tests.support.paths import ROOT

SPINE_CATALOG = ROOT / "tests" / "integration" / "spine" / "catalog"


def bot_env(home: Path, catalog: Path, database_url: str) -> dict[str, str]:
    """The settings of a bot over a test catalog (runbooks/, playbooks/, operators.yaml), fresh secret key,
    fast heartbeats and polls."""
    return {
        "RUNBOOK_BOT_HOME": str(home),
        "RUNBOOK_BOT_RUNBOOKS": str(catalog / "runbooks"),
        "RUNBOOK_BOT_PLAYBOOKS": str(catalog / "playbooks"),
        "RUNBOOK_BOT_CONFIG": str(catalog / "operators.yaml"),
        "RUNBOOK_BOT_INVENTORY": str(ROOT / "inventory" / "local"),
        "RUNBOOK_BOT_SECRET_KEY": "test-master-key-" + uuid.uuid4().hex,
        "RUNBOOK_BOT_HEARTBEAT_SECONDS": "0.5",
        "RUNBOOK_BOT_POLL_SECONDS": "0.2",
        "DATABASE_URL": database_url,
    }


class RealSpine:
    """The spine over the real catalog; `.build(**env)` sets extra environment and builds the context."""

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
