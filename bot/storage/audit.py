"""The audit trail: append-only, hash-chained events in PostgreSQL.

Each event stores hash = sha256(prev_hash + canonical JSON of {seq, at, run_id, actor, action, body}).
Appends lock the single `audit_head` row, so they are serialized and the chain never forks; the event
is written in the caller's transaction, so a state change and its event commit (or fail) together.
The database refuses UPDATE/DELETE/TRUNCATE on audit_events; `verify` catches what a superuser who
disabled the triggers could still do (edit, delete, insert, reorder).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from bot.domain.plan import canonical_json, sha256_hex
from bot.storage.database import Conn, Database

GENESIS = "0" * 64


def _normalize(value: Any) -> Any:
    """JSON that survives a jsonb round trip unchanged (so the hash can be recomputed from the row)."""
    if isinstance(value, dict):
        return {str(k): _normalize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalize(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) and abs(value) < 1e15 else str(value)
    if isinstance(value, str):
        return value.replace("\x00", "\\u0000")
    if value is None or isinstance(value, bool | int):
        return value
    return str(value)


def document(seq: int, at: datetime, run_id: int | None, actor: str, action: str, body: Any) -> dict[str, Any]:
    return {
        "seq": seq, "at": at.astimezone(UTC).isoformat(), "run_id": run_id,
        "actor": actor, "action": action, "body": body,
    }


def chain_hash(prev_hash: str, doc: dict[str, Any]) -> str:
    return sha256_hex(prev_hash + canonical_json(doc))


@dataclass(frozen=True)
class AuditEvent:
    seq: int
    at: datetime
    run_id: int | None
    actor: str
    action: str
    body: dict[str, Any]
    prev_hash: str
    hash: str

    def as_json(self) -> dict[str, Any]:
        return {**document(self.seq, self.at, self.run_id, self.actor, self.action, self.body),
                "prev_hash": self.prev_hash, "hash": self.hash}


def append(conn: Conn, *, actor: str, action: str, run_id: int | None, body: dict[str, Any]) -> AuditEvent:
    """Append one event in the caller's transaction (fails closed: an error aborts the transaction)."""
    head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE").fetchone()
    if head is None:
        raise psycopg.errors.RaiseException("audit_head row is missing")
    seq, prev = int(head["seq"]) + 1, str(head["hash"])
    at = datetime.now(UTC)
    clean = _normalize(body)
    digest = chain_hash(prev, document(seq, at, run_id, actor, action, clean))
    conn.execute(
        "WITH ev AS (INSERT INTO audit_events (seq, at, run_id, actor, action, body, prev_hash, hash)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s))"
        " UPDATE audit_head SET seq = %s, hash = %s WHERE id = 1",
        (seq, at, run_id, actor, action, Jsonb(clean), prev, digest, seq, digest),
    )
    return AuditEvent(seq, at, run_id, actor, action, clean, prev, digest)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    events: int
    bad_seq: int | None = None
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "events": self.events, "first_bad_event": self.bad_seq, "reason": self.reason}


def _rows(db: Database, sql: str, batch: int = 5000) -> Iterator[tuple[Any, ...]]:
    with db.pool.connection() as conn, conn.transaction():
        with conn.cursor(name="audit_scan", row_factory=psycopg.rows.tuple_row) as cur:
            cur.itersize = batch
            cur.execute(sql)
            yield from cur


def verify(db: Database) -> VerifyResult:
    """Recompute the whole chain; report the first event that does not fit."""
    prev, expected, count = GENESIS, 1, 0
    sql = "SELECT seq, at, run_id, actor, action, body, prev_hash, hash FROM audit_events ORDER BY seq"
    for seq, at, run_id, actor, action, body, prev_hash, digest in _rows(db, sql):
        if seq != expected:
            why = (f"event {expected} is missing (deleted)" if seq > expected
                   else f"event {seq} appears out of order")
            return VerifyResult(False, count, expected if seq > expected else seq, why)
        if prev_hash != prev:
            return VerifyResult(False, count, seq, f"event {seq} does not link to event {seq - 1} "
                                "(an event was inserted, deleted or reordered before it)")
        if chain_hash(prev, document(seq, at, run_id, actor, action, body)) != digest:
            return VerifyResult(False, count, seq, f"event {seq} was modified: its content does not match its hash")
        prev, expected, count = digest, expected + 1, count + 1
    with db.transaction() as conn:
        head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    if head is None or int(head["seq"]) != count or head["hash"] != prev:
        head_seq = None if head is None else int(head["seq"])
        return VerifyResult(False, count, count + 1 if head_seq and head_seq > count else count,
                            f"the chain ends at event {count} but its head records event {head_seq}"
                            " (events were deleted from the end or the head was altered)")
    return VerifyResult(True, count)


def export(db: Database) -> Iterator[str]:
    """Every event as one JSON line, in chain order."""
    sql = "SELECT seq, at, run_id, actor, action, body, prev_hash, hash FROM audit_events ORDER BY seq"
    for row in _rows(db, sql):
        yield json.dumps(AuditEvent(*row).as_json(), sort_keys=True, ensure_ascii=False)


def events_for_run(conn: Conn, run_id: int) -> list[AuditEvent]:
    rows = conn.execute(
        "SELECT seq, at, run_id, actor, action, body, prev_hash, hash FROM audit_events"
        " WHERE run_id = %s ORDER BY seq", (run_id,),
    ).fetchall()
    return [AuditEvent(**r) for r in rows]
