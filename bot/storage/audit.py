"""The audit trail: append-only, hash-chained events in PostgreSQL.

Each event stores hash = sha256(prev_hash || document), where the document is the canonical JSON text of
{at, run_id, actor, action, body}: PostgreSQL's jsonb text form (keys sorted, fixed spacing), with `at` in
UTC with microseconds. One statement appends: it locks the single `audit_head` row (so appends are
serialized and the chain never forks), computes the hash, inserts the event and moves the head, inside
the caller's transaction, so a state change and its event commit (or fail) together.

The document is built by an inline expression of pg_catalog builtins (never a stored function that a
superuser could swap), both when appending and when verifying; `audit export` carries the exact document
text, so an outside verifier can recompute the chain without PostgreSQL.

The database refuses UPDATE/DELETE/TRUNCATE on audit_events; `verify` catches what a superuser who
disabled the triggers could still do (edit, delete, insert, reorder).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from bot.storage.database import Conn, Database

GENESIS = "0" * 64


def _document_sql(at: str, run_id: str, actor: str, action: str, body: str) -> str:
    return (
        "pg_catalog.jsonb_build_object("
        f"'at', pg_catalog.to_char(({at}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
        f"'run_id', ({run_id}), 'actor', ({actor}), 'action', ({action}), 'body', ({body}))::text"
    )


DOCUMENT_OF_ROW = _document_sql("at", "run_id", "actor", "action", "body")
_APPEND = f"""
WITH head AS (
    SELECT seq, hash, pg_catalog.clock_timestamp() AS at FROM audit_head WHERE id = 1 FOR UPDATE
), ev AS (
    SELECT head.seq + 1 AS seq, head.at, head.hash AS prev,
           pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(head.hash || {_document_sql(
               "head.at", "%(run_id)s::bigint", "%(actor)s::text", "%(action)s::text", "%(body)s::jsonb")},
               'UTF8')), 'hex') AS hash
    FROM head
), ins AS (
    INSERT INTO audit_events (seq, at, run_id, actor, action, body, prev_hash, hash)
    SELECT seq, at, %(run_id)s, %(actor)s, %(action)s, %(body)s, prev, hash FROM ev
    RETURNING seq, at, prev_hash, hash
)
UPDATE audit_head SET seq = ins.seq, hash = ins.hash FROM ins WHERE audit_head.id = 1
RETURNING ins.seq, ins.at, ins.prev_hash, ins.hash
"""


def _normalize(value: Any) -> Any:
    """JSON jsonb accepts (it refuses NUL characters; exotic objects become strings)."""
    if isinstance(value, dict):
        return {str(k): _normalize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalize(v) for v in value]
    if isinstance(value, str):
        return value.replace("\x00", "\\u0000")
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)


def chain_hash(prev_hash: str, document: str) -> str:
    return hashlib.sha256((prev_hash + document).encode("utf-8")).hexdigest()


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


def append(conn: Conn, *, actor: str, action: str, run_id: int | None, body: dict[str, Any]) -> AuditEvent:
    """Append one event in the caller's transaction (fails closed: an error aborts the transaction)."""
    clean = _normalize(body)
    row = conn.execute(_APPEND, {"run_id": run_id, "actor": actor, "action": action, "body": Jsonb(clean)}).fetchone()
    if row is None:
        raise psycopg.errors.RaiseException("audit_head row is missing")
    return AuditEvent(row["seq"], row["at"], run_id, actor, action, clean, row["prev_hash"], row["hash"])


def append_many(conn: Conn, events: list[tuple[str, str, int | None, dict[str, Any]]]) -> int:
    """Append (actor, action, run_id, body) events in order, pipelined in the caller's transaction.

    The same statement as `append` runs once per event, so each is chained to the one before it under the
    head row lock; pipelining only saves the round trips. Returns the last sequence number.
    """
    if not events:
        raise ValueError("append_many needs at least one event")
    params = [{"run_id": run_id, "actor": actor, "action": action, "body": Jsonb(_normalize(body))}
              for actor, action, run_id, body in events]
    with conn.cursor() as cur:
        cur.executemany(_APPEND, params, returning=True)
        last = None
        while True:
            row = cur.fetchone()
            if row is not None:
                last = row["seq"]
            if not cur.nextset():
                break
    if last is None:
        raise psycopg.errors.RaiseException("audit append returned nothing")
    return int(last)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    events: int
    bad_seq: int | None = None
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "events": self.events, "first_bad_event": self.bad_seq, "reason": self.reason}


def _rows(db: Database, sql: str, batch: int = 10000) -> Iterator[tuple[Any, ...]]:
    with db.pool.connection() as conn, conn.transaction():
        with conn.cursor(name="audit_scan", row_factory=psycopg.rows.tuple_row) as cur:
            cur.itersize = batch
            cur.execute(sql)
            yield from cur


_SCAN = f"SELECT seq, prev_hash, hash, {DOCUMENT_OF_ROW} FROM audit_events ORDER BY seq"


def verify(db: Database) -> VerifyResult:
    """Recompute the whole chain; report the first event that does not fit."""
    prev, expected, count = GENESIS, 1, 0
    sha256 = hashlib.sha256
    for seq, prev_hash, digest, document in _rows(db, _SCAN):
        if seq != expected:
            if seq > expected:
                return VerifyResult(False, count, expected, f"event {expected} is missing (deleted)")
            return VerifyResult(False, count, seq, f"event {seq} appears out of order")
        if prev_hash != prev:
            return VerifyResult(False, count, seq, f"event {seq} does not link to event {seq - 1} "
                                "(an event was inserted, deleted or reordered before it)")
        if sha256((prev + document).encode("utf-8")).hexdigest() != digest:
            return VerifyResult(False, count, seq, f"event {seq} was modified: its content does not match its hash")
        prev, expected, count = digest, expected + 1, count + 1
    with db.transaction() as conn:
        head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    head_seq = None if head is None else int(head["seq"])
    if head is None or head_seq != count or head["hash"] != prev:
        return VerifyResult(False, count, count + 1 if (head_seq or 0) > count else max(count, 1),
                            f"the chain ends at event {count} but its head records event {head_seq}"
                            " (events were deleted from the end or the head was altered)")
    return VerifyResult(True, count)


def export(db: Database) -> Iterator[str]:
    """Every event as one JSON line, in chain order, with the exact document text that was hashed."""
    sql = ("SELECT seq, at, run_id, actor, action, body, prev_hash, hash, "
           f"{DOCUMENT_OF_ROW} FROM audit_events ORDER BY seq")
    for seq, at, run_id, actor, action, body, prev_hash, digest, document in _rows(db, sql):
        yield json.dumps({"seq": seq, "at": at.isoformat(), "run_id": run_id, "actor": actor, "action": action,
                          "body": body, "prev_hash": prev_hash, "hash": digest, "document": document},
                         sort_keys=True, ensure_ascii=False)


def events_for_run(conn: Conn, run_id: int) -> list[AuditEvent]:
    rows = conn.execute(
        "SELECT seq, at, run_id, actor, action, body, prev_hash, hash FROM audit_events"
        " WHERE run_id = %s ORDER BY seq", (run_id,),
    ).fetchall()
    return [AuditEvent(**r) for r in rows]
