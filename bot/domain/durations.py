"""Durations as runbook authors write them: 90, "90s", "30m", "2h", "1d"."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RE = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")


def parse_duration(value: object) -> int:
    """Seconds in `value`; raises ValueError with a readable reason."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 30m, got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("a duration must be positive")
        return value
    if isinstance(value, str):
        m = _RE.match(value)
        if m:
            seconds = int(m.group(1)) * _UNITS[m.group(2) or "s"]
            if seconds <= 0:
                raise ValueError("a duration must be positive")
            return seconds
    raise ValueError(f"expected a duration like 90s, 30m, 2h or 1d, got {value!r}")


def format_duration(seconds: float) -> str:
    """A short human duration: 4.2s, 3m05s, 2h10m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
