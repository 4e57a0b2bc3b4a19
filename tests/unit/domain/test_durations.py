"""Durations: parsing and formatting."""

from __future__ import annotations

import pytest

from bot.domain.durations import format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"),
                         [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), (45, 45)])
def test_durations(text: object, seconds: int) -> None:
    """Durations accept plain seconds and s/m/h/d suffixes."""
    assert parse_duration(text) == seconds


def test_bad_durations_and_formatting() -> None:
    """Nonsense durations are refused; formatting is short."""
    for bad in ("soon", "-5m", 0, True, "5 minutes"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert format_duration(4.24) == "4.2s"
    assert format_duration(185) == "3m05s"
    assert format_duration(7800) == "2h10m"
