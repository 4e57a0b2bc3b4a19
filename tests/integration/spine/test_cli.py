"""The runbook-bot command: one-line errors, JSON output, audit verify exit codes, embedded default."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import psycopg
import pytest

from tests.support.paths import ROOT
from tests.support.pgcluster import free_port
from tests.support.spine import cli

pytestmark = pytest.mark.slow


def _one_line_error(proc: object) -> str:
    err = proc.stderr.strip()  # type: ignore[attr-defined]
    assert proc.returncode == 2, err  # type: ignore[attr-defined]
    assert len(err.splitlines()) == 1, err
    assert err.startswith("runbook-bot: error: ")
    return err


def test_request_approve_work_status_end_to_end(spine_env: dict[str, str]) -> None:
    """The CLI alone carries a run from request to succeeded, with JSON status."""
    req = cli(spine_env, "request", "echo", "target=api", "message=from the terminal", "--reason", "INC-42")
    assert req.returncode == 0, req.stderr
    run_id = req.stdout.strip()
    assert "needs 1 approval(s) from group:sre" in req.stderr
    assert cli(spine_env, "approve", run_id, "--comment", "lgtm", user="bob").returncode == 0
    work = cli(spine_env, "worker", "--once")
    assert f"[run {run_id}] TASK Show the message" in work.stdout
    assert f"[run {run_id}] succeeded" in work.stdout
    status = json.loads(cli(spine_env, "status", run_id, "--json").stdout)
    assert status["state"] == "succeeded"
    assert status["reason"] == "INC-42"
    assert status["approved_by"] == ["bob"]
    assert status["result"]["echo"] == "from the terminal"
    runs = json.loads(cli(spine_env, "runs", "--json").stdout)
    assert [r["id"] for r in runs] == [int(run_id)]
    full = cli(spine_env, "status", run_id, "--output").stdout
    assert "TASK [Show the message]" in full and '"msg": "message is from the terminal"' in full


def test_runbooks_lists_only_what_the_user_may_request(spine_env: dict[str, str]) -> None:
    """`runbooks` hides runbooks restricted to other groups; --all shows them."""
    mine = {r["name"] for r in json.loads(cli(spine_env, "runbooks", "--json").stdout)}
    everything = {r["name"] for r in json.loads(cli(spine_env, "runbooks", "--json", "--all").stdout)}
    assert "restricted" not in mine
    assert "restricted" in everything


@pytest.mark.parametrize(("args", "user", "fragment"), [
    (("request", "nope"), "alice", "unknown runbook 'nope'"),
    (("request", "echo", "target=api", "count=99"), "alice", "above the maximum 5"),
    (("request", "echo", "target"), "alice", "expected key=value"),
    (("request", "echo", "target=api"), "mallory", "'mallory' is not an operator"),
    (("status", "999"), "alice", "no run 999"),
    (("approve", "999"), "bob", "no run 999"),
])
def test_user_errors_are_one_line(spine_env: dict[str, str], args: tuple[str, ...], user: str, fragment: str) -> None:
    """Each user error is a single line on stderr with exit code 2."""
    assert fragment in _one_line_error(cli(spine_env, *args, user=user))


def test_own_approval_and_finished_cancel_are_one_line_errors(spine_env: dict[str, str]) -> None:
    """Approving your own request and cancelling a finished run are refused in one line."""
    run_id = cli(spine_env, "request", "echo", "target=api").stdout.strip()
    assert "another approver must decide" in _one_line_error(cli(spine_env, "approve", run_id))
    assert cli(spine_env, "deny", run_id, user="bob").returncode == 0
    assert "already finished (denied)" in _one_line_error(cli(spine_env, "cancel", run_id))


def test_locked_target_names_the_holder(spine_env: dict[str, str]) -> None:
    """A second request for a locked target names the run holding it."""
    run_id = cli(spine_env, "request", "echo", "target=api").stdout.strip()
    err = _one_line_error(cli(spine_env, "request", "echo", "target=api", user="bob"))
    assert f"target locked: echo/api is held by run {run_id}" in err


def test_database_down_is_a_clear_error(spine_env: dict[str, str]) -> None:
    """With the database unreachable, commands fail in one line and say what to do."""
    env = {**spine_env, "DATABASE_URL": f"postgresql://postgres:x@127.0.0.1:{free_port()}/nope"}
    err = _one_line_error(cli(env, "runs"))
    assert "database down" in err and "x@" not in err


def test_audit_verify_exit_codes(spine_env: dict[str, str]) -> None:
    """audit verify exits 0 on an intact chain and 1 naming the first bad event after tampering."""
    cli(spine_env, "request", "echo", "target=api")
    ok = cli(spine_env, "audit", "verify", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    with psycopg.connect(spine_env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE audit_events SET actor = 'mallory' WHERE seq = 1")
    bad = cli(spine_env, "audit", "verify")
    assert bad.returncode == 1
    assert "BROKEN at event 1" in bad.stdout


def test_invalid_catalog_names_file_and_key(spine_env: dict[str, str], tmp_path: Path) -> None:
    """A broken runbook file stops the command with an error naming the file and the key."""
    books = tmp_path / "runbooks"
    shutil.copytree(spine_env["RUNBOOK_BOT_RUNBOOKS"], books)
    bad = books / "echo.md"
    bad.write_text(bad.read_text().replace("lock: echo/{target}", "lock: echo/{tagret}"))
    err = _one_line_error(cli({**spine_env, "RUNBOOK_BOT_RUNBOOKS": str(books)}, "runbooks"))
    assert f"{bad}: lock: names unknown parameter {{tagret}}" in err


def test_embedded_postgres_is_the_default(tmp_path: Path) -> None:
    """With DATABASE_URL unset, the CLI starts its own PostgreSQL under RUNBOOK_BOT_HOME and reuses it."""
    from bot.storage.database import embedded_pgdata, stop_embedded

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"RUNBOOK_BOT_HOME": str(home), "DATABASE_URL": "",
                "RUNBOOK_BOT_CONFIG": str(ROOT / "tests/integration/spine/catalog/operators.yaml")})
    try:
        first = cli(env, "request", "db-connections")
        assert first.returncode == 0, first.stderr
        again = cli(env, "runs", "--json")
        assert [r["runbook"] for r in json.loads(again.stdout)] == ["db-connections"]
        assert (embedded_pgdata(home) / "PG_VERSION").exists()
    finally:
        stop_embedded(home)
        if os.geteuid() == 0:  # the cluster lives outside the home (see embedded_pgdata)
            shutil.rmtree(embedded_pgdata(home).parent, ignore_errors=True)


def test_status_follow_streams_until_the_run_ends(spine_env: dict[str, str]) -> None:
    """`status --follow` prints state changes and task lines while another process runs it, then the result."""
    import subprocess
    import sys

    run_id = cli(spine_env, "request", "sleeper", "seconds=1").stdout.strip()
    env = {**os.environ, **spine_env, "LOGNAME": "alice"}
    follower = subprocess.Popen([sys.executable, "-m", "bot.cli", "status", run_id, "--follow"], env=env, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert follower.stdout is not None
    first = follower.stdout.readline()  # following has begun before any worker exists
    assert first.startswith(f"[run {run_id}] queued"), first
    assert cli(spine_env, "worker", "--once").returncode == 0
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert f"[run {run_id}] TASK [Sleep]" in out
    assert "slept 1s" in out
