"""`runbook-bot demo up|down|status`: a real pgBackRest stanza set up and torn down, nothing left running."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import demo
from bot.storage.database import embedded_pgdata
from tests.support.paths import ROOT
from tests.support.spine import cli

pytestmark = pytest.mark.slow


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    yield home
    demo.down(home, io.StringIO())
    if os.geteuid() == 0:  # the demo lives outside the home (see embedded_pgdata)
        shutil.rmtree(embedded_pgdata(home).parent, ignore_errors=True)


@pytest.mark.skipif(shutil.which("pgbackrest") is None or not (demo.PG_BIN_DIR / "initdb").exists(),
                    reason="needs pgbackrest and PostgreSQL 15 (make system-deps)")
def test_up_makes_a_stanza_with_one_backup_and_down_leaves_nothing_running(home: Path) -> None:
    """up: stanza `demo` with one full backup, nothing running, drill settings for the inventory; down: all gone."""
    env = {"RUNBOOK_BOT_HOME": str(home), "RUNBOOK_BOT_CONFIG": str(ROOT / "runbook-bot.example.yaml")}

    up = cli(env, "demo", "up", timeout=300)

    assert up.returncode == 0, up.stderr
    base = demo.demo_dir(home)
    settings = demo.drill_vars(home)
    assert settings["scratch_dir"] == str(base / "drill") and settings["os_user"] == demo.demo_user()
    info = subprocess.run(demo._as_user(["pgbackrest", f"--config={settings['pgbackrest_config']}",
                                         "--stanza=demo", "--output=json", "info"]),
                          capture_output=True, text=True, check=True, cwd="/").stdout
    assert [b["type"] for b in json.loads(info)[0]["backup"]] == ["full"]
    assert demo._postgres_pids_under(base) == []  # the source cluster is stopped again
    assert "already up" in cli(env, "demo", "up").stdout
    assert f"up in {base}" in cli(env, "demo", "status").stdout

    # a drill copy a killed worker left running is stopped too
    subprocess.run(demo._as_user([str(demo.PG_BIN_DIR / "pg_ctl"), "-D", str(base / "pgdata"), "-w",
                                  "-l", str(base / "log" / "again.log"), "start"]), check=True, cwd="/",
                   capture_output=True)
    assert demo._postgres_pids_under(base)
    down = cli(env, "demo", "down")

    assert down.returncode == 0, down.stderr
    assert "stopped 1 cluster(s)" in down.stdout and "nothing of the demo is running" in down.stdout
    assert not base.exists() and demo._postgres_pids_under(base) == []
    assert demo.drill_vars(home) == {}
    assert "not set up" in cli(env, "demo", "status").stdout


def test_up_without_pgbackrest_says_what_to_install(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Missing packages: one line naming them and `make system-deps`; nothing is created."""
    monkeypatch.setattr(demo.shutil, "which", lambda name, path=None: None)

    with pytest.raises(demo.DemoError, match=r"pgbackrest .*not installed: run `sudo make system-deps`"):
        demo.up(home, io.StringIO())
    assert not demo.demo_dir(home).exists()
