"""Stopping a run stops its playbook: cancel, timeout, SIGTERM and kill -9 of a worker end the whole
process tree (the task's `sleep` included) before the run is final and its lock is released; a database
outage at the end of a playbook loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bot.composition import build_cli
from bot.config import Settings
from bot.domain.runs import RunState
from bot.errors import LockHeld, RunbookBotError
from bot.execution.worker import WorkerPool
from bot.spine import Spine
from bot.storage import audit
from tests.support.paths import ROOT
from tests.support.pgcluster import PgCluster, make_tmp_dir, remove_tree
from tests.support.processes import alive
from tests.support.spine import cli, op, ran
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow
CANARY = "canary-Stop-8d41be"


def _sleep_pid(spine_env: dict[str, str], run_id: int, timeout: float = 60) -> int:
    """The pid of the run's `sleep` task process (the sleeper playbook writes it before it execs sleep)."""
    path = Path(spine_env["SPINE_TEST_LOG"]).parent / f"sleep-{run_id}.pid"
    wait_for(lambda: path.exists() and path.read_text().strip().isdigit(), timeout=timeout)
    pid = int(path.read_text())
    assert alive(pid)
    return pid


def _state_when_final(ctx: Spine, run_id: int, pid: int, timeout: float = 60) -> RunState:
    """Poll the run until it is final; at the moment it is, its task process must already be gone."""
    final: list[RunState] = []

    def check() -> bool:
        try:
            state = ctx.service.get(run_id).state
        except RunbookBotError:
            return False
        if state.terminal:
            assert not alive(pid), f"run {run_id} is {state.value} while its task (pid {pid}) still runs"
            final.append(state)
        return bool(final)

    wait_for(check, timeout=timeout, interval=0.05)
    return final[0]


@pytest.fixture(autouse=True)
def _no_task_outlives_its_test(spine_env: dict[str, str]) -> Iterator[None]:
    """If a test fails half-way, the sleep it started is still ended (only pids our playbooks wrote)."""
    yield
    for pidfile in Path(spine_env["SPINE_TEST_LOG"]).parent.glob("sleep-*.pid"):
        text = pidfile.read_text().strip()
        if text.isdigit() and alive(int(text)) and b"sleep" in Path(f"/proc/{text}/cmdline").read_bytes():
            os.kill(int(text), signal.SIGKILL)


def _worker(spine_env: dict[str, str], *command: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **spine_env, "LOGNAME": "alice"}
    return subprocess.Popen([sys.executable, "-m", "bot.cli", *(command or ["worker"])], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.fixture(params=["cgroup2", "freezer", "environ"])
def tracked_ctx(request: pytest.FixtureRequest, spine_env: dict[str, str]) -> Iterator[Spine]:
    """The spine with one way of tracking a run's processes (skipped where the machine lacks it)."""
    context = build_cli(Settings.from_env({**spine_env, "RUNBOOK_BOT_PROCESS_TRACKING": request.param}))
    try:
        if getattr(context.service.runner, "tracking", request.param) != request.param:
            pytest.skip(f"{request.param} is not usable on this machine")
        yield context
    finally:
        context.close()


def test_cancel_ends_the_task_before_the_run_is_cancelled_and_the_lock_freed(
        tracked_ctx: Spine, spine_env: dict[str, str]) -> None:
    """Cancel: the task's sleep is gone when the run shows cancelled; a second run on the lock waits."""
    ctx = tracked_ctx
    res = ctx.service.request("sleeper", {"seconds": "60"}, op(ctx, "alice"))
    pool = ctx.worker_pool(1)
    pool.start()
    try:
        pid = _sleep_pid(spine_env, res.run.id)
        with pytest.raises(LockHeld):
            ctx.service.request("sleeper", {"seconds": "1"}, op(ctx, "alice"))
        ctx.service.cancel(res.run.id, op(ctx, "alice"))
        assert _state_when_final(ctx, res.run.id, pid) is RunState.CANCELLED
        second = ctx.service.request("sleeper", {"seconds": "0"}, op(ctx, "alice"))
        wait_for(lambda: ctx.service.get(second.run.id).state.terminal, timeout=60)
    finally:
        pool.stop()
    done = ctx.service.get(res.run.id)
    assert done.error is not None and "processes were ended" in done.error
    assert ctx.service.get(second.run.id).state is RunState.SUCCEEDED
    assert not list((ctx.settings.home / "work").iterdir())


def test_timeout_ends_the_task_before_the_run_is_timed_out(ctx: Spine, spine_env: dict[str, str]) -> None:
    """A runbook timeout (12 s) ends the sleeping task before the run shows timed_out and frees its lock."""
    res = ctx.service.request("tardy", {"seconds": "60"}, op(ctx, "alice"))
    pool = ctx.worker_pool(1)
    pool.start()
    try:
        pid = _sleep_pid(spine_env, res.run.id)
        with pytest.raises(LockHeld):
            ctx.service.request("tardy", {"seconds": "1"}, op(ctx, "alice"))
        assert _state_when_final(ctx, res.run.id, pid) is RunState.TIMED_OUT
    finally:
        pool.stop()
    assert "timeout" in (ctx.service.get(res.run.id).error or "")


@pytest.mark.parametrize(("command", "sig"), [
    (["worker"], signal.SIGTERM), (["serve", "--no-scheduler"], signal.SIGTERM),
    (["serve", "--no-scheduler"], signal.SIGINT),
])
def test_a_signal_to_worker_or_serve_ends_its_runs_and_records_them_interrupted(
        ctx: Spine, spine_env: dict[str, str], command: list[str], sig: signal.Signals) -> None:
    """SIGTERM/SIGINT of `worker`/`serve`: the task is ended, the run says so (interrupted), then it exits."""
    res = ctx.service.request("sleeper", {"seconds": "60"}, op(ctx, "alice"))
    worker = _worker(spine_env, *command)
    try:
        pid = _sleep_pid(spine_env, res.run.id)
        worker.send_signal(sig)
        assert _state_when_final(ctx, res.run.id, pid) is RunState.INTERRUPTED
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    done = ctx.service.get(res.run.id)
    assert done.error == f"worker stopped by {sig.name}; the playbook was ended and not re-run"


def test_kill_9_of_a_worker_the_recovering_worker_ends_the_task_and_removes_secrets(
        ctx: Spine, spine_env: dict[str, str], database_url: str) -> None:
    """kill -9 mid-task: the lock stays held while the task lives; recovery ends it, then frees the lock,
    and no file under RUNBOOK_BOT_HOME holds the secret parameter any more."""
    res = ctx.service.request("sleeper", {"seconds": "120", "token": CANARY}, op(ctx, "alice"))
    worker = _worker(spine_env)
    try:
        pid = _sleep_pid(spine_env, res.run.id)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    home = Path(spine_env["RUNBOOK_BOT_HOME"])
    assert alive(pid), "the orphaned task keeps running until someone ends it"
    with pytest.raises(LockHeld):
        ctx.service.request("sleeper", {"seconds": "1"}, op(ctx, "alice"))

    def stale() -> bool:
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT heartbeat_at < now() - interval '1.5 seconds' FROM runs WHERE id = %s",
                               (res.run.id,)).fetchone()
        return bool(row and row[0])

    wait_for(stale, timeout=30)
    after = cli({**spine_env, "RUNBOOK_BOT_STALE_AFTER_SECONDS": "1"}, "worker", "--once")
    assert after.returncode == 0, after.stderr
    assert not alive(pid)
    done = ctx.service.get(res.run.id)
    assert done.state is RunState.INTERRUPTED
    assert done.error is not None and "processes were ended" in done.error and "not re-run" in done.error
    assert ran(spine_env) == [f"ran sleeper {res.run.id}"]
    for path in home.rglob("*"):
        if path.is_file() and "pgdata" not in path.parts:
            assert CANARY.encode() not in path.read_bytes(), path
    assert not list((home / "work").iterdir()), "the crashed run's private data dir (extra vars) must go"
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM run_secrets").fetchone() == (0,)
    ctx.service.request("sleeper", {"seconds": "0"}, op(ctx, "alice"))  # the lock is free now


def test_a_stale_run_of_another_host_keeps_its_lock_and_says_why(ctx: Spine, database_url: str) -> None:
    """Only the owning host can see a run's processes: elsewhere the sweeper holds the lock and says so."""
    res = ctx.service.request("sleeper", {"seconds": "60"}, op(ctx, "alice"))
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE runs SET state = 'running', host = 'far-away-host', worker = 'far-away-host:1/0',"
                     " heartbeat_at = now() - interval '1 hour',"
                     " processes = '{\"group\": {\"kind\": \"environ\", \"marker\": \"x\"}}' WHERE id = %s",
                     (res.run.id,))
    assert ctx.service.recover_stale(1) == []
    held = ctx.service.get(res.run.id)
    assert held.state is RunState.RUNNING
    assert held.error is not None and "owner host far-away-host has not confirmed" in held.error
    with pytest.raises(LockHeld):
        ctx.service.request("sleeper", {"seconds": "1"}, op(ctx, "alice"))


def test_a_stale_run_whose_worker_is_alive_here_is_left_alone(
        ctx: Spine, spine_env: dict[str, str], database_url: str) -> None:
    """Missed heartbeats alone do not make a run lost: while its worker process lives, the sweeper of
    its own host neither ends its processes nor marks it interrupted."""
    res = ctx.service.request("sleeper", {"seconds": "60"}, op(ctx, "alice"))
    pool = WorkerPool(ctx.service, size=1, poll_seconds=0.2, heartbeat_seconds=3600)
    pool.start()
    try:
        pid = _sleep_pid(spine_env, res.run.id)
        with psycopg.connect(database_url) as conn:
            conn.execute("UPDATE runs SET heartbeat_at = now() - interval '1 hour' WHERE id = %s", (res.run.id,))
        assert ctx.service.recover_stale(1) == []
        assert ctx.service.get(res.run.id).state is RunState.RUNNING
        assert alive(pid)
        ctx.service.cancel(res.run.id, op(ctx, "alice"))
        pool.tracker.beat()  # the cancel request travels with the heartbeat
        assert _state_when_final(ctx, res.run.id, pid) is RunState.CANCELLED
    finally:
        pool.stop()


@pytest.fixture
def own_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL server of this test alone (it is stopped and started again mid-test)."""
    base = make_tmp_dir("rb-pgdown-")
    cluster = PgCluster(base).start()
    try:
        yield cluster
    finally:
        cluster.stop("immediate")
        remove_tree(base)


def test_database_down_when_the_playbook_ends_the_outcome_is_recorded_later(
        own_cluster: PgCluster, spine_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL stops while the last task sleeps: the outcome is kept (0600 spool file) and recorded as
    succeeded, with its summary, once the database is back; the sweeper never calls it interrupted."""
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(own_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    env = {**spine_env, "DATABASE_URL": own_cluster.dsn(name)}
    monkeypatch.setenv("DATABASE_URL", env["DATABASE_URL"])
    ctx = build_cli(Settings.from_env(env))
    pool = ctx.worker_pool(1)
    try:
        res = ctx.service.request("sleeper", {"seconds": "8"}, op(ctx, "alice"))
        pool.start()
        pid = _sleep_pid(spine_env, res.run.id)
        own_cluster.stop("fast")
        spooled = ctx.settings.home / "outcomes" / f"{res.run.id}.json"
        wait_for(lambda: spooled.exists() and not alive(pid), timeout=60)
        assert spooled.stat().st_mode & 0o777 == 0o600
        assert '"succeeded"' in spooled.read_text()
        own_cluster.start()
        # the sweeper, with every running run stale, must record the kept outcome, not `interrupted`
        wait_for(lambda: _quietly(lambda: ctx.service.recover_stale(0)) is not None, timeout=60)
        wait_for(lambda: _quietly(lambda: ctx.service.get(res.run.id).state.terminal), timeout=60)
        done = ctx.service.get(res.run.id)
        assert done.state is RunState.SUCCEEDED, done.error
        assert done.summary == ["slept 8s"]
        assert audit.verify(ctx.db).ok
        wait_for(lambda: not spooled.exists(), timeout=30)
    finally:
        pool.stop()
        ctx.close()


def test_an_outcome_kept_by_a_killed_worker_is_recorded_by_the_next_one(
        own_cluster: PgCluster, spine_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker that kept an outcome while PostgreSQL was down is killed; the next worker records it."""
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(own_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    env = {**spine_env, "DATABASE_URL": own_cluster.dsn(name)}
    monkeypatch.setenv("DATABASE_URL", env["DATABASE_URL"])
    ctx = build_cli(Settings.from_env(env))
    try:
        res = ctx.service.request("sleeper", {"seconds": "8"}, op(ctx, "alice"))
        worker = _worker(env)
        try:
            pid = _sleep_pid(spine_env, res.run.id)
            own_cluster.stop("fast")
            spooled = ctx.settings.home / "outcomes" / f"{res.run.id}.json"
            wait_for(lambda: spooled.exists() and not alive(pid), timeout=60)
        finally:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
        own_cluster.start()
        after = cli(env, "worker", "--once")
        assert after.returncode == 0, after.stderr
        wait_for(lambda: _quietly(lambda: ctx.service.get(res.run.id)) is not None, timeout=30)  # pool reconnects
        done = ctx.service.get(res.run.id)
        assert done.state is RunState.SUCCEEDED, done.error
        assert done.summary == ["slept 8s"]
        assert not spooled.exists()
        assert audit.verify(ctx.db).ok
    finally:
        ctx.close()


def _quietly(fn: object) -> object:
    """fn() or None while the database is still coming back."""
    try:
        return fn()  # type: ignore[operator]
    except RunbookBotError:
        return None
