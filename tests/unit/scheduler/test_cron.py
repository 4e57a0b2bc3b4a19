"""Cron slots of scheduled runbooks."""

from __future__ import annotations

from datetime import UTC, datetime


def test_latest_fire_time_is_the_cron_slot() -> None:
    """A scheduled fire is keyed by the cron slot it belongs to, not the moment the job ran."""
    from bot.scheduler import latest_fire_time

    now = datetime(2026, 11, 23, 4, 0, 7, 123000, tzinfo=UTC)  # a Monday, 7 s after 04:00
    assert latest_fire_time("0 4 * * 1", now) == datetime(2026, 11, 23, 4, 0, tzinfo=UTC)
