"""Cron slots of scheduled runbooks."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.scheduler import latest_fire_time

FIRE = datetime(2026, 11, 24, 4, 0, tzinfo=UTC)


def test_latest_fire_time_is_the_cron_slot() -> None:
    """A scheduled fire is keyed by the cron slot it belongs to, not the moment the job ran."""
    now = datetime(2026, 11, 23, 4, 0, 7, 123000, tzinfo=UTC)  # a Monday, 7 s after 04:00
    assert latest_fire_time("0 4 * * 1", now) == datetime(2026, 11, 23, 4, 0, tzinfo=UTC)


def test_fire_time_key_is_stable_within_the_grace_window() -> None:
    """Replicas that run the job seconds apart compute the same fire time (the unique key)."""
    a = latest_fire_time("0 4 * * *", datetime(2026, 11, 24, 4, 0, 0, 900, tzinfo=UTC))
    b = latest_fire_time("0 4 * * *", datetime(2026, 11, 24, 4, 3, 12, tzinfo=UTC))
    assert a == b == FIRE
