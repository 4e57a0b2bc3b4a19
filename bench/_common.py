"""Shared bench helpers: a real PostgreSQL (fsync ON, as in production), timing, and the ratio report."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.pgcluster import PgCluster, make_tmp_dir  # noqa: E402


def start_postgres() -> PgCluster:
    """A PostgreSQL 15 server with durable commits (fsync on, synchronous_commit on)."""
    return PgCluster(make_tmp_dir("rb-bench-"), conf={"fsync": "on", "synchronous_commit": "on"}).start()


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"
