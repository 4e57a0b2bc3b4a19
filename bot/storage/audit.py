"""The audit trail: append-only, hash-chained events in PostgreSQL.

Each event stores hash = sha256(prev_hash || document), where the document is the canonical JSON text of
{at, run_id, actor, action, body}: PostgreSQL's jsonb text form (keys sorted, fixed spacing), with `at` in
UTC with microseconds. One statement appends: it locks the single `audit_head` row (so appends are
serialized and the chain never forks), computes the hash, inserts the event and moves the head, inside
the caller's transaction, so a state change and its event commit (or fail) together.

The document is built by an inline expression of pg_catalog builtins (never a stored function that a
superuser could swap), both when appending and when verifying; `audit export` carries the exact document
text, so an outside verifier can recompute the chain without PostgreSQL.

The database refuses UPDATE/DELETE/TRUNCATE on audit_events (and the runtime role, owning nothing, cannot
switch that off). A chain alone only catches a careless rewrite: whoever can disable the triggers can
also recompute every later hash and move the head. `verify` therefore also compares the chain with the
anchors (bot.storage.anchors): (seq, hash) pairs kept outside PostgreSQL under a key it does not hold.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from bot.storage.anchors import AnchorRead
from bot.storage.database import Conn, Database
from bot.storage.trail import GENESIS, AuditEvent


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
class AnchorCheck:
    """How the chain compared with one anchor sink."""

    source: str
    anchors: int
    last_seq: int | None
    ok: bool
    problem: str = ""
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"source": self.source, "anchors": self.anchors, "last_anchored_seq": self.last_seq,
                "ok": self.ok, "problem": self.problem or None, "unreachable": self.error}


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    events: int
    bad_seq: int | None = None
    reason: str = ""
    anchors: tuple[AnchorCheck, ...] = ()
    warnings: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "events": self.events, "first_bad_event": self.bad_seq, "reason": self.reason,
                "anchors": [a.as_json() for a in self.anchors], "warnings": list(self.warnings)}


@contextmanager
def _snapshot(db: Database) -> Iterator[Conn]:
    """One REPEATABLE READ transaction: the chain scan and the head read see the same moment."""
    with db.pool.connection() as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield conn


def _rows(conn: Conn, sql: str, batch: int = 10000) -> Iterator[tuple[Any, ...]]:
    with conn.cursor(name="audit_scan", row_factory=psycopg.rows.tuple_row) as cur:
        cur.itersize = batch
        cur.execute(sql)
        yield from cur


_SCAN = f"SELECT seq, prev_hash, hash, {DOCUMENT_OF_ROW} FROM audit_events ORDER BY seq"


def verify(db: Database, anchors: Sequence[AnchorRead] = ()) -> VerifyResult:
    """Recompute the whole chain; report the first event that does not fit, then compare it with every
    anchor read beforehand (read anchors BEFORE calling this, so none is newer than the chain scanned)."""
    wanted: dict[int, str] = {a.seq: a.hash for read in anchors for a in read.anchors}
    seen: dict[int, str] = {}
    prev, expected, count = GENESIS, 1, 0
    sha256 = hashlib.sha256
    with _snapshot(db) as conn:
        for seq, prev_hash, digest, document in _rows(conn, _SCAN):
            if seq != expected:
                if seq > expected:
                    return VerifyResult(False, count, expected, f"event {expected} is missing (deleted)")
                return VerifyResult(False, count, seq, f"event {seq} appears out of order")
            if prev_hash != prev:
                return VerifyResult(False, count, seq, f"event {seq} does not link to event {seq - 1} "
                                    "(an event was inserted, deleted or reordered before it)")
            if sha256((prev + document).encode("utf-8")).hexdigest() != digest:
                return VerifyResult(False, count, seq,
                                    f"event {seq} was modified: its content does not match its hash")
            if seq in wanted:
                seen[seq] = digest
            prev, expected, count = digest, expected + 1, count + 1
        head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    head_seq = None if head is None else int(head["seq"])
    if head is None or head_seq != count or head["hash"] != prev:
        return VerifyResult(False, count, count + 1 if (head_seq or 0) > count else max(count, 1),
                            f"the chain ends at event {count} but its head records event {head_seq}"
                            " (events were deleted from the end or the head was altered)")
    return _against_anchors(count, seen, anchors)


def _against_anchors(count: int, seen: dict[int, str], reads: Sequence[AnchorRead]) -> VerifyResult:
    checks: list[AnchorCheck] = []
    warnings: list[str] = []
    failures: list[tuple[int, str]] = []  # (seq, reason); the lowest seq is reported
    for read in reads:
        problem = ""
        if read.tampered:
            problem = read.tampered[0] + (f" (and {len(read.tampered) - 1} more)" if len(read.tampered) > 1 else "")
            failures.append((0, f"anchor {problem}"))
        beyond = max((a for a in read.anchors if a.seq > count), key=lambda x: x.seq, default=None)
        if beyond is not None:
            why = (f"the chain ends at event {count} but anchor {beyond.where} records event {beyond.seq}: "
                   "events were removed from the end (and the head moved back)")
            failures.append((count + 1, why))
            problem = problem or why
        for a in sorted(read.anchors, key=lambda x: x.seq):
            if a.seq <= count and seen.get(a.seq) != a.hash:
                why = (f"event {a.seq} differs from anchor {a.where} (anchored {a.hash[:16]}…, chain has "
                       f"{(seen.get(a.seq) or '?')[:16]}…): the chain was rewritten at or before event {a.seq}")
                failures.append((a.seq, why))
                problem = problem or why
                break
        last = max((a.seq for a in read.anchors), default=None)
        checks.append(AnchorCheck(read.source, len(read.anchors), last, not problem and read.error is None,
                                  problem, read.error))
        if read.error:
            warnings.append(f"anchors at {read.source} could not be read: {read.error}")
        warnings += [f"{read.source}: {n}" for n in read.notes]
    anchored = max((c.last_seq or 0 for c in checks), default=0)
    if reads and count > anchored:
        warnings.append(f"{count - anchored} event(s) after event {anchored} are not anchored yet (anchoring "
                        "failed or has not run since): a rewrite of those would not be detected")
    if failures:
        seq, why = min(failures, key=lambda f: (f[0] == 0, f[0]))  # chain failures before bad entries
        return VerifyResult(False, count, seq or None, why, tuple(checks), tuple(warnings))
    return VerifyResult(True, count, anchors=tuple(checks), warnings=tuple(warnings))


def export(db: Database) -> Iterator[str]:
    """Every event as one JSON line, in chain order, with the exact document text that was hashed."""
    sql = ("SELECT seq, at, run_id, actor, action, body, prev_hash, hash, "
           f"{DOCUMENT_OF_ROW} FROM audit_events ORDER BY seq")
    with _snapshot(db) as conn:
        for seq, at, run_id, actor, action, body, prev_hash, digest, document in _rows(conn, sql):
                yield json.dumps({"seq": seq, "at": at.isoformat(), "run_id": run_id, "actor": actor,
                              "action": action, "body": body, "prev_hash": prev_hash, "hash": digest,
                              "document": document},
                         sort_keys=True, ensure_ascii=False)


def events_for_run(conn: Conn, run_id: int) -> list[AuditEvent]:
    rows = conn.execute(
        "SELECT seq, at, run_id, actor, action, body, prev_hash, hash FROM audit_events"
        " WHERE run_id = %s ORDER BY seq", (run_id,),
    ).fetchall()
    return [AuditEvent(**r) for r in rows]


def append_once(conn: Conn, *, actor: str, action: str, body: dict[str, Any], match: Sequence[str]) -> bool:
    """Append unless an event with `action` and the same `match` fields of `body` exists; True when appended.
    Concurrent callers for the same action and fields are serialized (an advisory lock on them)."""
    key = json.dumps([action, *(str(body.get(k)) for k in match)])
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))
    where = "".join(" AND body->>%s = %s" for _ in match)
    args: list[Any] = [action]
    for k in match:
        args += [k, str(body.get(k))]
    seen = conn.execute(f"SELECT 1 FROM audit_events WHERE action = %s{where} LIMIT 1", args).fetchone()
    if seen is not None:
        return False
    append(conn, actor=actor, action=action, run_id=None, body=body)
    return True
