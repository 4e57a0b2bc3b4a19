"""Drill evidence at its edges: a chart asked for with no drills, and a stale-drill alert said once per
staleness episode (remembered in the database across restarts), not on every start."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from bot.composition import build_cli
from bot.config import Settings
from bot.scheduler import check_staleness
from bot.spine import Spine
from tests.support.spine import cli, drain, op

pytestmark = pytest.mark.slow


def test_chart_with_no_drills_is_written_and_says_so(spine_env: dict[str, str], tmp_path: Path) -> None:
    """`drills --chart FILE` with no drills writes a chart saying so, and tells where."""
    chart = tmp_path / "rto.png"
    out = cli(spine_env, "drills", "--chart", str(chart))
    assert out.returncode == 0, out.stderr
    assert "no restore drills on record" in out.stdout
    assert f"RTO trend chart: {chart} (empty: no restore drills with an RTO yet)" in out.stdout
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stale_drill_is_alerted_once_per_episode(ctx: Spine, spine_env: dict[str, str]) -> None:
    """The alert comes once, not again after a restart; a new episode (a later pass gone stale) alerts again."""
    assert [a for a in check_staleness(ctx) if "nightly" in a], "no drill yet: stale"
    assert check_staleness(ctx) == []
    restarted = build_cli(Settings.from_env(spine_env))
    try:
        assert check_staleness(restarted) == []
    finally:
        restarted.close()
    res = ctx.service.request("nightly", {}, op(ctx, "alice"))
    ctx.service.approve(res.run.id, op(ctx, "bob"))
    drain(ctx)
    with psycopg.connect(spine_env["DATABASE_URL"], autocommit=True) as conn:  # that pass is now 9 days old
        conn.execute("UPDATE runs SET finished_at = now() - interval '9 days' WHERE id = %s", (res.run.id,))
    again = [a for a in check_staleness(ctx) if "nightly" in a]
    assert len(again) == 1 and "last successful restore drill" in again[0]
    assert check_staleness(ctx) == []
    with psycopg.connect(spine_env["DATABASE_URL"]) as conn:
        row = conn.execute("SELECT count(*) FROM audit_events WHERE action = 'drill_stale_alerted'").fetchone()
    assert row is not None and row[0] == 2
    assert cli(spine_env, "audit", "verify").returncode == 0


def test_stale_drill_alerts_go_to_the_sinks_the_scheduler_is_given(ctx: Spine) -> None:
    """Each new alert reaches every sink passed in (serve passes Slack's notifier); a failing sink does not stop
    the next, and a later check with other sinks does not repeat the alert to anyone."""
    received: list[str] = []

    def broken(text: str) -> None:
        raise RuntimeError("sink down")

    alerts = check_staleness(ctx, alert_sinks=[broken, received.append])
    assert [a for a in alerts if "nightly" in a] and received == alerts
    later: list[str] = []
    assert check_staleness(ctx, alert_sinks=[later.append]) == [] and later == []
