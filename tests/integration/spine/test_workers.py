"""Workers: exactly-once under concurrency, cancel, crash recovery, and secrets that never leak."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from bot.domain.runs import RunState
from bot.errors import RunbookBotError
from bot.spine import Spine
from bot.storage import audit
from tests.support.paths import ROOT
from tests.support.spine import cli, op, ran
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow
CANARY = "canary-S3cr3t-7f3a9c"


def test_three_concurrent_approvals_with_quorum_two_queue_exactly_once(ctx: Spine) -> None:
    """Three approvers clicking at once: two approvals count, one run is queued, the third is told why."""
    res = ctx.service.request("quorum", {"target": "a"}, op(ctx, "dave"))
    barrier = threading.Barrier(3)
    outcomes: list[str] = []

    def click(name: str) -> None:
        barrier.wait()
        try:
            outcomes.append(ctx.service.approve(res.run.id, op(ctx, name)).state.value)
        except RunbookBotError as e:
            outcomes.append(type(e).__name__)

    threads = [threading.Thread(target=click, args=(n,)) for n in ("alice", "bob", "carol")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["RunStateError", "pending_approval", "queued"]
    with ctx.db.transaction() as conn:
        actions = [e.action for e in audit.events_for_run(conn, res.run.id)]
    assert actions.count("queued") == 1
    assert actions.count("approved") == 2


def test_two_pools_share_the_queue_without_running_anything_twice(ctx: Spine, spine_env: dict[str, str]) -> None:
    """Two worker pools on one database (SKIP LOCKED) execute each queued run exactly once."""
    ids = []
    for target in ("a", "b", "c", "d"):
        r = ctx.service.request("selfok", {"target": target}, op(ctx, "alice"))
        ctx.service.approve(r.run.id, op(ctx, "alice"))
        ids.append(r.run.id)
    pools = [ctx.worker_pool(2), ctx.worker_pool(2)]
    threads = [threading.Thread(target=p.run_once) for p in pools]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ran(spine_env)) == sorted(f"ran selfok {i}" for i in ids)
    assert all(ctx.service.get(i).state is RunState.SUCCEEDED for i in ids)


def test_cancel_stops_a_running_playbook_within_seconds(ctx: Spine) -> None:
    """`cancel` on a running run stops the playbook and records cancelled."""
    res = ctx.service.request("sleeper", {"seconds": "120"}, op(ctx, "alice"))
    pool = ctx.worker_pool(1)
    pool.start()
    try:
        wait_for(lambda: ctx.service.get(res.run.id).state is RunState.RUNNING, timeout=30)
        wait_for(lambda: "TASK [Sleep]" in _stdout(ctx, res.run.id), timeout=30)
        ctx.service.cancel(res.run.id, op(ctx, "alice"))
        wait_for(lambda: ctx.service.get(res.run.id).state.terminal, timeout=20)
    finally:
        pool.stop()
    done = ctx.service.get(res.run.id)
    assert done.state is RunState.CANCELLED
    assert done.duration_seconds is not None and done.duration_seconds < 60


def _stdout(ctx: Spine, run_id: int) -> str:
    path = ctx.settings.artifacts_dir / str(run_id) / "stdout.txt"
    return path.read_text() if path.exists() else ""


def _heartbeat_age(spine_env: dict[str, str], run_id: int) -> float:
    """Seconds since the run's last heartbeat, by the database's clock (the one the stale check uses)."""
    with psycopg.connect(spine_env["DATABASE_URL"]) as conn:
        row = conn.execute("SELECT extract(epoch FROM now() - heartbeat_at) FROM runs WHERE id = %s",
                           (run_id,)).fetchone()
    assert row is not None
    return float(row[0])


def test_killed_worker_leaves_an_interrupted_run_that_is_never_rerun(ctx: Spine, spine_env: dict[str, str]) -> None:
    """kill -9 of the worker mid-run: the next worker marks the run interrupted and does not run it again."""
    res = ctx.service.request("sleeper", {"seconds": "120"}, op(ctx, "alice"))
    env = {**os.environ, **spine_env, "LOGNAME": "alice"}
    worker = subprocess.Popen([sys.executable, "-m", "bot.cli", "worker"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: ctx.service.get(res.run.id).state is RunState.RUNNING, timeout=60)
        wait_for(lambda: len(ran(spine_env)) == 1, timeout=60)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    assert ctx.service.get(res.run.id).state is RunState.RUNNING
    wait_for(lambda: _heartbeat_age(spine_env, res.run.id) > 1.0, timeout=30,
             what="the killed worker's heartbeat to be older than the 1 s stale limit")
    after = cli({**spine_env, "RUNBOOK_BOT_STALE_AFTER_SECONDS": "1"}, "worker", "--once")
    assert after.returncode == 0, after.stderr
    done = ctx.service.get(res.run.id)
    assert done.state is RunState.INTERRUPTED
    assert done.error is not None and "not re-run" in done.error
    assert ran(spine_env) == [f"ran sleeper {res.run.id}"]


def test_canary_secret_never_appears_anywhere(ctx: Spine, spine_env: dict[str, str], database_url: str) -> None:
    """A secret parameter value is absent from CLI output, logs, audit and runs tables, and artifacts."""
    req = cli(spine_env, "-v", "request", "echo", "target=api", f"token={CANARY}", "message=hello")
    assert req.returncode == 0, req.stderr
    run_id = int(req.stdout.strip())
    appr = cli(spine_env, "-v", "approve", str(run_id), user="bob")
    work = cli(spine_env, "-v", "worker", "--once")
    status = cli(spine_env, "status", str(run_id), "--json")
    export = cli(spine_env, "audit", "export")
    assert work.returncode == 0, work.stderr
    assert ctx.service.get(run_id).state is RunState.SUCCEEDED
    assert "token is ********" in (ctx.settings.artifacts_dir / str(run_id) / "stdout.txt").read_text()
    for proc in (req, appr, work, status, export):
        assert CANARY not in proc.stdout + proc.stderr
    with psycopg.connect(database_url) as conn:
        for table in ("runs", "approvals", "audit_events", "audit_head", "run_secrets"):
            dump = conn.execute(f"SELECT coalesce(string_agg(t::text, '\n'), '') FROM {table} t").fetchone()
            assert dump is not None and CANARY not in dump[0], table
        leftover = conn.execute("SELECT count(*) FROM run_secrets").fetchone()
        assert leftover == (0,)
    home = Path(spine_env["RUNBOOK_BOT_HOME"])
    for path in home.rglob("*"):
        if path.is_file() and "pgdata" not in path.parts:
            assert CANARY.encode() not in path.read_bytes(), path
    assert not any((home / "work").iterdir()), "private data dirs (with extra vars) must be removed"
