"""The audit chain: append-only in the database, and verification that catches every kind of tampering."""

from __future__ import annotations

import threading

import psycopg
import pytest

from bot.spine import Spine
from bot.storage import audit
from bot.storage.database import Database, migrate

pytestmark = pytest.mark.slow


@pytest.fixture
def db(database_url: str) -> Database:
    database = Database(database_url, max_size=24)
    migrate(database)
    return database


def _fill(db: Database, n: int = 10) -> None:
    for i in range(n):
        with db.transaction() as conn:
            audit.append(conn, actor="alice", action="requested", run_id=i, body={"i": i, "ratio": 0.25})


def _superuser(database_url: str, sql: str) -> None:
    """Tamper as a superuser who first disables the append-only triggers."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # triggers off for this session
        conn.execute(sql)


def test_intact_chain_verifies(db: Database) -> None:
    """An untouched chain verifies and counts its events."""
    _fill(db)
    assert audit.verify(db).as_json() == {"ok": True, "events": 10, "first_bad_event": None, "reason": "",
                                          "anchors": [], "warnings": []}


def test_database_refuses_update_and_delete(db: Database) -> None:
    """UPDATE, DELETE and TRUNCATE on audit_events are refused by the database itself."""
    _fill(db, 2)
    for sql in ("UPDATE audit_events SET actor = 'mallory'", "DELETE FROM audit_events",
                "TRUNCATE audit_events"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.transaction() as conn:
            conn.execute(sql)
    assert audit.verify(db).ok


TAMPERING: dict[str, tuple[str, int]] = {
    "edit": ("UPDATE audit_events SET body = '{\"i\": 99, \"ratio\": 0.25}' WHERE seq = 4", 4),
    "delete": ("DELETE FROM audit_events WHERE seq = 5", 5),
    "delete_last": ("DELETE FROM audit_events WHERE seq = 10", 10),
    # Swap events 3 and 6 (through negative numbers so the primary key never collides).
    "reorder": ("UPDATE audit_events SET seq = -seq WHERE seq IN (3, 6);"
                " UPDATE audit_events SET seq = CASE seq WHEN -3 THEN 6 ELSE 3 END WHERE seq < 0", 3),
    # Shift events 7.. up by one and insert a copy of an approval at 7.
    "insert": ("UPDATE audit_events SET seq = -seq WHERE seq >= 7;"
               " UPDATE audit_events SET seq = -seq + 1 WHERE seq < 0;"
               " INSERT INTO audit_events SELECT 7, at, run_id, actor, 'approved', body, prev_hash, hash"
               " FROM audit_events WHERE seq = 8", 7),
}


@pytest.mark.parametrize("kind", sorted(TAMPERING))
def test_tampering_is_detected_and_named(db: Database, database_url: str, kind: str) -> None:
    """Edit, delete, reorder and insert (with triggers disabled) each fail verification at the first bad event."""
    _fill(db)
    sql, first_bad = TAMPERING[kind]
    _superuser(database_url, sql)
    result = audit.verify(db)
    assert not result.ok
    assert result.bad_seq == first_bad, result.reason


def test_concurrent_appends_keep_one_chain(db: Database) -> None:
    """20 threads appending at once produce one gap-free, valid chain."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(20)

    def worker(i: int) -> None:
        try:
            barrier.wait()
            for j in range(5):
                with db.transaction() as conn:
                    audit.append(conn, actor=f"t{i}", action="requested", run_id=i, body={"j": j})
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert audit.verify(db).as_json()["events"] == 100
    assert audit.verify(db).ok


def test_failed_audit_write_blocks_the_transition(ctx: Spine, database_url: str) -> None:
    """When the audit event cannot be written, the state change does not happen (fail closed)."""
    from bot.errors import StorageError
    from tests.support.spine import op

    res = ctx.service.request("echo", {"target": "api"}, op(ctx, "alice"))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("REVOKE ALL ON audit_head FROM PUBLIC")
        conn.execute("CREATE ROLE limited LOGIN PASSWORD 'limited'")
        conn.execute("GRANT SELECT, INSERT, UPDATE ON runs, approvals TO limited")
        conn.execute("GRANT SELECT, INSERT ON audit_events TO limited")
        conn.execute("GRANT SELECT ON audit_head TO limited")
    limited_url = database_url.replace("postgres:test-superuser-pw@", "limited:limited@")
    limited = Database(limited_url)
    try:
        with pytest.raises((psycopg.errors.InsufficientPrivilege, StorageError)), limited.transaction() as conn:
            from bot.domain.runs import RunState
            from bot.storage import runs as repo

            run = repo.get_run(conn, res.run.id, for_update=True)
            repo.transition(conn, run, RunState.CANCELLED, actor="alice")
    finally:
        limited.close()
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DROP OWNED BY limited")
            conn.execute("DROP ROLE limited")
    assert ctx.service.get(res.run.id).state.value == "pending_approval"


def test_export_writes_every_event_as_json_lines(db: Database) -> None:
    """audit export yields one JSON object per event, in chain order, with its hashes."""
    import json

    _fill(db, 3)
    lines = [json.loads(x) for x in audit.export(db)]
    assert [e["seq"] for e in lines] == [1, 2, 3]
    assert lines[1]["prev_hash"] == lines[0]["hash"]



def test_append_many_chains_events_in_order(db: Database) -> None:
    """Pipelined appends in one transaction chain each event to the previous one, like single appends."""
    _fill(db, 2)
    with db.transaction() as conn:
        last = audit.append_many(conn, [("alice", "requested", 7, {"n": 1}), ("alice", "queued", 7, {"n": 2})])
    assert last == 4
    assert audit.verify(db).as_json()["events"] == 4
    with db.transaction() as conn:
        assert [e.action for e in audit.events_for_run(conn, 7)] == ["requested", "queued"]
