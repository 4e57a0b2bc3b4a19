"""Scheduled runbooks and restore drill evidence: one run per fire time, history, staleness, charts."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.composition import build_cli
from bot.config import Settings
from bot.domain.runs import RunState
from bot.scheduler import check_staleness, fire_scheduled, metrics, start
from bot.scheduler.drills import drill_history
from bot.spine import Spine
from tests.support.spine import cli, drain, op

pytestmark = pytest.mark.slow
FIRE = datetime(2026, 11, 24, 4, 0, tzinfo=UTC)


def test_two_replicas_firing_together_start_one_run(ctx: Spine, spine_env: dict[str, str]) -> None:
    """Two schedulers (two processes' worth of contexts) firing the same slot produce exactly one run."""
    other = build_cli(Settings.from_env(spine_env))
    results: list[int | None] = []
    barrier = threading.Barrier(2)

    def fire(c: Spine) -> None:
        barrier.wait()
        results.append(fire_scheduled(c, "nightly", FIRE))

    try:
        threads = [threading.Thread(target=fire, args=(c,)) for c in (ctx, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        other.close()
    started = [r for r in results if r is not None]
    assert len(started) == 1
    run = ctx.service.get(started[0])
    assert (run.state, run.requested_by, run.source) == (RunState.QUEUED, "scheduler", "scheduler")
    assert fire_scheduled(ctx, "nightly", FIRE) is None  # the same slot again: already fired
    assert len(ctx.service.runs()) == 1


def test_scheduler_registers_coalescing_jobs_that_request_runs(ctx: Spine) -> None:
    """Each scheduled runbook is a coalescing, single-instance cron job with an explicit id."""
    handle = start(ctx)
    try:
        job = handle.scheduler.get_job("runbook:nightly")
        assert job is not None
        assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 600)
        assert handle.scheduler.get_job("runbook:echo") is None
        job.func()  # what APScheduler calls at the fire time
    finally:
        handle.stop()
    runs = ctx.service.runs()
    assert [(r.runbook, r.state) for r in runs] == [("nightly", RunState.QUEUED)]


def test_refused_scheduled_request_is_audited(ctx: Spine) -> None:
    """A fire that cannot start (target locked) is recorded in the audit trail, not lost silently."""
    held = ctx.service.request("nightly", {}, op(ctx, "alice"))
    assert fire_scheduled(ctx, "nightly", FIRE) is None
    with ctx.db.transaction() as conn:
        row = conn.execute("SELECT body FROM audit_events WHERE action = 'schedule_refused'").fetchone()
    assert row is not None and f"held by run {held.run.id}" in row["body"]["error"]


def test_drill_history_staleness_and_charts(ctx: Spine, spine_env: dict[str, str], tmp_path: Path) -> None:
    """Drills list with RTO/RPO/result; a failed one names its check; staleness clears after a pass."""
    assert [a for a in check_staleness(ctx) if "nightly" in a], "no drill yet: stale"
    assert 'runbook_bot_drill_seconds_since_success{runbook="nightly"} +Inf' in metrics(ctx)
    for rto, verdict in (("12.5", "PASS"), ("14.0", "FAIL"), ("11.2", "PASS")):
        res = ctx.service.request("nightly", {"rto": rto, "verdict": verdict}, op(ctx, "alice"))
        ctx.service.approve(res.run.id, op(ctx, "bob"))
        drain(ctx)
    drills = drill_history(ctx)
    assert [(d.rto_seconds, d.passed) for d in drills] == [(11.2, True), (14.0, False), (12.5, True)]
    assert drills[0].backup == "20261124-040000F"
    assert check_staleness(ctx) == []
    assert 'runbook_bot_drill_stale{runbook="nightly"} 0' in metrics(ctx)
    out = cli(spine_env, "drills", "--chart", str(tmp_path / "rto.png"))
    assert out.returncode == 0, out.stderr
    assert "RTO    11.2s" in out.stdout and "FAIL" in out.stdout and "RTO trend (oldest first)" in out.stdout
    assert (tmp_path / "rto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(cli(spine_env, "drills", "--json").stdout)
    assert data["staleness"][0]["stale"] is False


