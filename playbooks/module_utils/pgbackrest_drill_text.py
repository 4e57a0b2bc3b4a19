"""Values of the restore drill (pgbackrest_drill module): targets, SQL/config quoting, WAL arithmetic, times.

Pure functions, imported as `ansible.module_utils.pgbackrest_drill_text`.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

from ansible.module_utils.pgbackrest_drill_state import CheckFailed

TIME_TARGET = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([+-]\d{2}(:?\d{2})?|Z)$")
TAIL_LINES = 12


def now() -> float:
    return time.time()


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds")  # noqa: UP017


def tail(text: str, n: int = TAIL_LINES) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def parse_target(target: str) -> tuple[str, float | None]:
    """Return (kind, epoch) for latest | immediate | an ISO timestamp with a zone."""
    if target in ("latest", "immediate"):
        return target, None
    if not TIME_TARGET.match(target):
        raise CheckFailed([("target", f"{target!r} is not latest, immediate or a timestamp with a time zone")])
    text = target.replace(" ", "T").replace("Z", "+00:00")
    m = re.search(r"([+-]\d{2})$", text)
    if m:  # "+00" -> "+00:00" for fromisoformat
        text += ":00"
    return "time", datetime.fromisoformat(text).timestamp()


def quote_conf(value: object) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


def quote_ident_path(name: str) -> str:
    """`schema.table` or `table` -> a quoted SQL identifier path."""
    parts = name.split(".")
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise ValueError(f"bad table name {name!r} (use table or schema.table)")
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


def quote_literal(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def segno(walfile: str, seg_size: int) -> tuple[int, int]:
    """WAL file name -> (timeline, segment number)."""
    tli, log, seg = int(walfile[0:8], 16), int(walfile[8:16], 16), int(walfile[16:24], 16)
    return tli, log * (0x100000000 // seg_size) + seg


def parse_lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)
