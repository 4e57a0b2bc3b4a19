"""Scheduled runs fired outside `serve` (a standalone scheduler) are reported in the drills channel."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.composition import build_cli
from bot.config import Settings
from bot.scheduler import fire_scheduled
from tests.support.slack_bot import Bot

pytestmark = pytest.mark.slow


def test_scheduled_run_gets_a_report_with_its_result_in_the_drills_channel(bot: Bot) -> None:
    """A run the scheduler fired elsewhere is announced in channels.drills and its result lands in the thread."""
    ctx = build_cli(Settings.from_env(bot.env))
    try:
        run_id = fire_scheduled(ctx, "nightly", datetime(2026, 11, 24, 3, 0, tzinfo=UTC))
    finally:
        ctx.close()
    assert run_id is not None

    def card() -> dict[str, object] | None:
        return next((c.args for c in bot.slack.of("chat.postMessage")
                     if c.args.get("channel") == "C0DRILLS" and not c.args.get("thread_ts")), None)

    bot.slack.wait_for(card, what="the scheduled run's report in C0DRILLS", timeout=90)
    [row] = bot.query("SELECT notify FROM runs WHERE id = %s", run_id)
    assert row["notify"]["card"]["channel"] == "C0DRILLS"
    ts = str(row["notify"]["card"]["ts"])

    def result() -> bool:
        return bot.run_state(run_id) == "succeeded" and any(
            "succeeded" in str(m.get("text", "")).lower() for m in bot.thread_messages(ts))

    bot.slack.wait_for(result, what="the result in the report's thread", timeout=90)
