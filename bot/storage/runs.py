"""Runs and approvals in PostgreSQL. Every state change writes its audit event in the same transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from bot.domain.ids import RunId
from bot.domain.policy import ApprovalRecord
from bot.domain.runs import ACTION_FOR_STATE, Approval, Run, RunState, can_transition
from bot.errors import LockHeld, RunNotFound, RunStateError
from bot.storage import audit, trail
from bot.storage.database import Conn

_COLUMNS = (
    "id, runbook, state, params, requested_by, reason, source, plan, plan_hash, lock_key, approvals_required,"
    " created_at, expires_at, started_at, finished_at, summary, result, error, notify, cancel_requested"
)


def _run(row: dict[str, Any], approvals: Sequence[Approval] = (), cancelled_by: str | None = None) -> Run:
    return Run(
        id=RunId(row["id"]), runbook=row["runbook"], state=RunState(row["state"]), params=row["params"],
        requested_by=row["requested_by"], reason=row["reason"], source=row["source"], plan=row["plan"],
        plan_hash=row["plan_hash"], lock_key=row["lock_key"], approvals_required=row["approvals_required"],
        created_at=row["created_at"], expires_at=row["expires_at"], started_at=row["started_at"],
        finished_at=row["finished_at"], summary=list(row["summary"] or []), result=dict(row["result"] or {}),
        error=row["error"], notify=dict(row["notify"] or {}), cancel_requested=row["cancel_requested"],
        approvals=tuple(approvals), cancelled_by=cancelled_by,
    )


def cancelled_by(conn: Conn, run_id: int) -> str | None:
    """Who cancelled the run (or asked a worker to): the actor of its first cancel event in the trail."""
    row = conn.execute(
        "SELECT actor FROM audit_events WHERE run_id = %s AND action IN ('cancel_requested', 'cancelled')"
        " ORDER BY seq LIMIT 1", (run_id,),
    ).fetchone()
    return str(row["actor"]) if row else None


def insert_run(conn: Conn, *, runbook: str, state: RunState, params: dict[str, Any], requested_by: str,
               reason: str, source: str, plan: dict[str, Any], plan_hash: str, lock_key: str | None,
               approvals_required: int, ttl_seconds: int, notify: dict[str, Any],
               secret_blob: bytes | None, schedule_key: str | None = None,
               event_key: bytes | None = None) -> RunId:
    """Insert a new run and its audit events; raise LockHeld when the lock key is taken."""
    try:
        with conn.transaction():  # a savepoint: a lock conflict leaves the outer transaction usable
            row = conn.execute(
                "INSERT INTO runs (runbook, state, params, requested_by, reason, source, plan, plan_hash,"
                " lock_key, approvals_required, expires_at, queued_at, notify, schedule_key)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s),"
                " CASE WHEN %s = 'queued' THEN now() END, %s, %s) RETURNING id",
                (runbook, state.value, Jsonb(params), requested_by, reason, source, Jsonb(plan), plan_hash,
                 lock_key, approvals_required, ttl_seconds, state.value, Jsonb(notify), schedule_key),
            ).fetchone()
    except psycopg.errors.UniqueViolation as e:
        if lock_key is not None and "runs_active_lock" in str(e):
            holder = lock_holder(conn, lock_key)
            raise LockHeld(lock_key, holder if holder is not None else -1) from None
        raise
    assert row is not None
    run_id = RunId(row["id"])
    if secret_blob is not None:
        conn.execute("INSERT INTO run_secrets (run_id, ciphertext) VALUES (%s, %s)", (run_id, secret_blob))
    audit.append_many(conn, trail.requested_events(
        run_id, runbook=runbook, state=state, params=params, requested_by=requested_by, reason=reason,
        source=source, plan_hash=plan_hash, lock_key=lock_key, approvals_required=approvals_required,
        schedule_key=schedule_key, event_key=event_key))
    return run_id


def lock_holder(conn: Conn, lock_key: str) -> RunId | None:
    """The active run holding `lock_key`, if any."""
    row = conn.execute(
        "SELECT id FROM runs WHERE lock_key = %s AND state IN ('pending_approval','queued','running')",
        (lock_key,),
    ).fetchone()
    return RunId(row["id"]) if row is not None else None


def get_run(conn: Conn, run_id: int, *, for_update: bool = False) -> Run:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM runs WHERE id = %s" + (" FOR UPDATE" if for_update else ""), (run_id,)
    ).fetchone()
    if row is None:
        raise RunNotFound(f"no run {run_id}: list runs with `runbook-bot runs`")
    who = cancelled_by(conn, run_id) if row["state"] == "cancelled" or row["cancel_requested"] else None
    return _run(row, approvals_for(conn, run_id), who)


def approvals_for(conn: Conn, run_id: int) -> list[Approval]:
    rows = conn.execute(
        "SELECT approver, decision, comment, at FROM approvals WHERE run_id = %s ORDER BY at", (run_id,)
    ).fetchall()
    return [Approval(**r) for r in rows]


def list_runs(conn: Conn, *, limit: int = 50, runbook: str | None = None,
              states: Sequence[RunState] | None = None) -> list[Run]:
    where: list[str] = []
    args: list[Any] = []
    if runbook:
        where.append("runbook = %s")
        args.append(runbook)
    if states:
        where.append("state = ANY(%s)")
        args.append([s.value for s in states])
    sql = f"SELECT {_COLUMNS} FROM runs" + (f" WHERE {' AND '.join(where)}" if where else "")
    rows = conn.execute(sql + " ORDER BY id DESC LIMIT %s", (*args, limit)).fetchall()
    return [_run(r) for r in rows]


def transition(conn: Conn, run: Run, dst: RunState, *, actor: str, body: dict[str, Any] | None = None,
               summary: list[str] | None = None, result: dict[str, Any] | None = None,
               error: str | None = None, worker: str | None = None) -> Run:
    """Move `run` from its (locked or expected) state to `dst` and append the audit event atomically."""
    if not can_transition(run.state, dst):
        raise RunStateError(f"run {run.id} is {run.state.value}; it cannot become {dst.value}")
    sets = ["state = %s", "updated_at = now()"]
    args: list[Any] = [dst.value]
    if dst is RunState.QUEUED:
        sets.append("queued_at = now()")
    if dst is RunState.RUNNING:
        sets += ["started_at = now()", "heartbeat_at = now()", "worker = %s"]
        args.append(worker)
    if dst.terminal:
        sets.append("finished_at = now()")
    if summary is not None:
        sets.append("summary = %s")
        args.append(Jsonb(summary))
    if result is not None:
        sets.append("result = %s")
        args.append(Jsonb(result))
    if error is not None:
        sets.append("error = %s")
        args.append(error)
    elif dst.terminal:
        sets.append("error = NULL")  # drop a note set while it ran (note_error), e.g. "lock held"
    row = conn.execute(
        f"UPDATE runs SET {', '.join(sets)} WHERE id = %s AND state = %s RETURNING {_COLUMNS}",
        (*args, run.id, run.state.value),
    ).fetchone()
    if row is None:
        current = get_run(conn, run.id)
        raise RunStateError(f"run {run.id} is now {current.state.value}; it cannot become {dst.value}")
    if dst.terminal:
        conn.execute("DELETE FROM run_secrets WHERE run_id = %s", (run.id,))
    audit.append(conn, actor=actor, action=ACTION_FOR_STATE[dst], run_id=run.id,
                 body=trail.transition_body(run.state, dst, body, error))
    return _run(row, run.approvals, cancelled_by(conn, run.id) if dst is RunState.CANCELLED else None)


def record_decision(conn: Conn, run: Run, approver: str, decision: str, comment: str,
                    event_key: bytes | None = None) -> None:
    conn.execute(
        "INSERT INTO approvals (run_id, approver, decision, comment) VALUES (%s, %s, %s, %s)",
        (run.id, approver, decision, comment),
    )
    if decision == "approve":
        audit.append(conn, actor=approver, action="approved", run_id=run.id,
                     body=trail.approved_body(run.id, run.plan_hash, approver, comment, event_key))


def approval_record(conn: Conn, run: Run, event_key: bytes) -> ApprovalRecord:
    """The run's approvals as the runs/approvals tables and the audit chain each hold them (read fresh);
    each `requested`/`approved` event's MAC is checked with `event_key` (which the database never holds)."""
    row = conn.execute("SELECT requested_by, plan_hash, source, schedule_key FROM runs WHERE id = %s",
                       (run.id,)).fetchone()
    if row is None:
        raise RunNotFound(f"no run {run.id}")
    return trail.approval_record(
        run.id, row_requester=row["requested_by"], row_plan_hash=row["plan_hash"], row_source=row["source"],
        row_schedule_key=row["schedule_key"], decisions=approvals_for(conn, run.id),
        events=audit.events_for_run(conn, run.id), event_key=event_key)


def secret_blob(conn: Conn, run_id: int) -> bytes | None:
    row = conn.execute("SELECT ciphertext FROM run_secrets WHERE run_id = %s", (run_id,)).fetchone()
    return bytes(row["ciphertext"]) if row else None


def claim_next(conn: Conn, worker: str, *, host: str | None = None,
               processes: dict[str, Any] | None = None) -> Run | None:
    """Take the oldest queued run (FOR UPDATE SKIP LOCKED: many workers, one database) and start it,
    recording which host (and which process there) owns it."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM runs WHERE state = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
    ).fetchone()
    if row is None:
        return None
    run = _run(row, approvals_for(conn, row["id"]))
    started = transition(conn, run, RunState.RUNNING, actor=f"worker:{worker}", worker=worker,
                         body={"worker": worker})
    conn.execute("UPDATE runs SET host = %s, processes = %s WHERE id = %s",
                 (host, Jsonb(processes) if processes is not None else None, run.id))
    return started


def set_process_group(conn: Conn, run_id: int, group: dict[str, Any]) -> None:
    """Where the run's processes are about to start (written before they start)."""
    conn.execute(
        "UPDATE runs SET processes = coalesce(processes, '{}'::jsonb) || jsonb_build_object('group', %s::jsonb)"
        " WHERE id = %s AND state = 'running'", (Jsonb(group), run_id),
    )


def ownership(conn: Conn, run_id: int) -> tuple[str | None, dict[str, Any]]:
    """(host, processes record) of a run."""
    row = conn.execute("SELECT host, processes FROM runs WHERE id = %s", (run_id,)).fetchone()
    if row is None:
        return None, {}
    return row["host"], dict(row["processes"] or {})


def note_error(conn: Conn, run_id: int, error: str) -> None:
    """Say why a running run is held (no state change, no audit event: nothing happened to it)."""
    conn.execute("UPDATE runs SET error = %s, updated_at = now() WHERE id = %s AND state = 'running'"
                 " AND error IS DISTINCT FROM %s", (error, run_id, error))


def heartbeat(conn: Conn, run_ids: Sequence[int]) -> dict[int, bool]:
    """Refresh heartbeats of our running runs (a sweeper's "lock held" note no longer applies);
    returns run id -> cancel requested."""
    if not run_ids:
        return {}
    rows = conn.execute(
        "UPDATE runs SET heartbeat_at = now(), error = NULL WHERE id = ANY(%s) AND state = 'running'"
        " RETURNING id, cancel_requested", (list(run_ids),),
    ).fetchall()
    return {int(r["id"]): bool(r["cancel_requested"]) for r in rows}


def request_cancel(conn: Conn, run: Run, actor: str) -> None:
    conn.execute("UPDATE runs SET cancel_requested = true, updated_at = now() WHERE id = %s", (run.id,))
    audit.append(conn, actor=actor, action="cancel_requested", run_id=run.id, body={"state": run.state.value})


def stale_running(conn: Conn, stale_after_seconds: float, *, for_update: bool = True) -> list[Run]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM runs WHERE state = 'running'"
        " AND heartbeat_at < now() - make_interval(secs => %s)" + (" FOR UPDATE SKIP LOCKED" if for_update else ""),
        (stale_after_seconds,),
    ).fetchall()
    return [_run(r) for r in rows]


def lock_if_stale(conn: Conn, run_id: int, stale_after_seconds: float) -> Run | None:
    """The run, row-locked, if it is still running without a recent heartbeat (else None)."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM runs WHERE id = %s AND state = 'running'"
        " AND heartbeat_at < now() - make_interval(secs => %s) FOR UPDATE SKIP LOCKED",
        (run_id, stale_after_seconds),
    ).fetchone()
    return _run(row) if row is not None else None


def overdue_pending(conn: Conn) -> list[Run]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM runs WHERE state = 'pending_approval' AND expires_at <= now()"
        " FOR UPDATE SKIP LOCKED"
    ).fetchall()
    return [_run(r) for r in rows]


def db_now(conn: Conn) -> datetime:
    row = conn.execute("SELECT now() AS now").fetchone()
    assert row is not None
    return row["now"]  # type: ignore[no-any-return]


def set_notify(conn: Conn, run_id: int, notify: dict[str, Any]) -> None:
    conn.execute("UPDATE runs SET notify = notify || %s WHERE id = %s", (Jsonb(notify), run_id))


def counts_by_state(conn: Conn) -> dict[str, int]:
    rows = conn.execute("SELECT state, count(*) AS n FROM runs GROUP BY state").fetchall()
    return {r["state"]: int(r["n"]) for r in rows}


def runs_with_result_key(conn: Conn, key: str, *, runbook: str | None = None, limit: int = 200) -> list[Run]:
    """Finished runs whose result carries `key` (e.g. restore drills carry rto_seconds), newest first."""
    sql = f"SELECT {_COLUMNS} FROM runs WHERE result ? %s" + (" AND runbook = %s" if runbook else "")
    args: tuple[Any, ...] = (key, runbook) if runbook else (key,)
    rows = conn.execute(sql + " ORDER BY id DESC LIMIT %s", (*args, limit)).fetchall()
    return [_run(r) for r in rows]


def claim_schedule_fire(conn: Conn, job_id: str, fire_time: datetime) -> bool:
    """True for the first to insert this (job, fire time): a unique key, so one replica wins."""
    row = conn.execute(
        "INSERT INTO schedule_fires (job_id, fire_time) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING job_id",
        (job_id, fire_time),
    ).fetchone()
    return row is not None


def set_schedule_fire_run(conn: Conn, job_id: str, fire_time: datetime, run_id: int) -> None:
    conn.execute("UPDATE schedule_fires SET run_id = %s WHERE job_id = %s AND fire_time = %s",
                 (run_id, job_id, fire_time))
