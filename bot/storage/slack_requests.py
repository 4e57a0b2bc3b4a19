"""Seen Slack requests (replay protection): `first_sighting` is true exactly once per (timestamp, signature),
across every process sharing the database."""

from __future__ import annotations

from bot.storage.database import Conn

KEEP_SECONDS = 10 * 60  # twice Slack's replay window: room for clock skew between replicas


def first_sighting(conn: Conn, sent_at: int, signature: str) -> bool:
    """Record the request; False when it was already recorded (a replay or a duplicate delivery).

    The commit does not wait for the WAL flush (synchronous_commit off, this transaction only): the
    uniqueness check is exact either way, and a database crash could forget at most the last few
    milliseconds of sightings, while every Slack request no longer waits for an fsync (about half of
    the ack time under concurrency)."""
    conn.execute("SET LOCAL synchronous_commit TO off")
    row = conn.execute(
        "INSERT INTO slack_requests (sent_at, signature) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING 1",
        (sent_at, signature),
    ).fetchone()
    return row is not None


def forget_expired(conn: Conn, now: float) -> int:
    """Delete requests too old to be accepted again; returns how many."""
    cur = conn.execute("DELETE FROM slack_requests WHERE sent_at < %s", (int(now) - KEEP_SECONDS,))
    return cur.rowcount
