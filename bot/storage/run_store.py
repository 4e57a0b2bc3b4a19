"""The run store over PostgreSQL (the bot.ports.RunStore that bot.composition builds).

Each `transaction()` is one PostgreSQL transaction on a pooled connection (bot.storage.database); its
operations are bot.storage.runs and bot.storage.audit, so a state change and its audit event commit, or
fail, together.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from bot.domain.ids import RunId
from bot.domain.policy import ApprovalRecord
from bot.domain.runs import NewRun, Run, RunState
from bot.storage import audit
from bot.storage import runs as repo
from bot.storage.database import Conn, Database


class PostgresTransaction:
    """bot.ports.RunTransaction on one connection."""

    def __init__(self, conn: Conn, event_key: bytes) -> None:
        self.conn, self.event_key = conn, event_key

    def insert(self, new: NewRun) -> RunId:
        return repo.insert_run(
            self.conn, runbook=new.runbook, state=new.state, params=new.params, requested_by=new.requested_by,
            reason=new.reason, source=new.source, plan=new.plan, plan_hash=new.plan_hash, lock_key=new.lock_key,
            approvals_required=new.approvals_required, ttl_seconds=new.ttl_seconds, notify=new.notify,
            secret_blob=new.secret_blob, schedule_key=new.schedule_key, event_key=self.event_key,
        )

    def get(self, run_id: int, *, for_update: bool = False) -> Run:
        return repo.get_run(self.conn, run_id, for_update=for_update)

    def list_runs(self, *, limit: int = 50, runbook: str | None = None,
             states: Sequence[RunState] | None = None) -> list[Run]:
        return repo.list_runs(self.conn, limit=limit, runbook=runbook, states=states)

    def lock_holder(self, lock_key: str) -> RunId | None:
        return repo.lock_holder(self.conn, lock_key)

    def now(self) -> datetime:
        return repo.db_now(self.conn)

    def transition(self, run: Run, dst: RunState, *, actor: str, body: dict[str, Any] | None = None,
                   summary: list[str] | None = None, result: dict[str, Any] | None = None,
                   error: str | None = None, worker: str | None = None) -> Run:
        return repo.transition(self.conn, run, dst, actor=actor, body=body, summary=summary, result=result,
                               error=error, worker=worker)

    def record_decision(self, run: Run, approver: str, decision: str, comment: str) -> None:
        repo.record_decision(self.conn, run, approver, decision, comment, event_key=self.event_key)

    def approval_record(self, run: Run) -> ApprovalRecord:
        return repo.approval_record(self.conn, run, self.event_key)

    def request_cancel(self, run: Run, actor: str) -> None:
        repo.request_cancel(self.conn, run, actor)

    def claim_next(self, worker: str, *, host: str | None = None,
                   processes: dict[str, Any] | None = None) -> Run | None:
        return repo.claim_next(self.conn, worker, host=host, processes=processes)

    def secret_blob(self, run_id: int) -> bytes | None:
        return repo.secret_blob(self.conn, run_id)

    def set_process_group(self, run_id: int, group: dict[str, Any]) -> None:
        repo.set_process_group(self.conn, run_id, group)

    def ownership(self, run_id: int) -> tuple[str | None, dict[str, Any]]:
        return repo.ownership(self.conn, run_id)

    def note_error(self, run_id: int, error: str) -> None:
        repo.note_error(self.conn, run_id, error)

    def heartbeat(self, run_ids: Sequence[int]) -> dict[int, bool]:
        return repo.heartbeat(self.conn, run_ids)

    def stale_running(self, stale_after_seconds: float, *, for_update: bool = True) -> list[Run]:
        return repo.stale_running(self.conn, stale_after_seconds, for_update=for_update)

    def lock_if_stale(self, run_id: int, stale_after_seconds: float) -> Run | None:
        return repo.lock_if_stale(self.conn, run_id, stale_after_seconds)

    def overdue_pending(self) -> list[Run]:
        return repo.overdue_pending(self.conn)

    def set_notify(self, run_id: int, notify: dict[str, Any]) -> None:
        repo.set_notify(self.conn, run_id, notify)

    def runs_with_result_key(self, key: str, *, runbook: str | None = None, limit: int = 200) -> list[Run]:
        return repo.runs_with_result_key(self.conn, key, runbook=runbook, limit=limit)

    def counts_by_state(self) -> dict[str, int]:
        return repo.counts_by_state(self.conn)

    def claim_schedule_fire(self, job_id: str, fire_time: datetime) -> bool:
        return repo.claim_schedule_fire(self.conn, job_id, fire_time)

    def set_schedule_fire_run(self, job_id: str, fire_time: datetime, run_id: int) -> None:
        repo.set_schedule_fire_run(self.conn, job_id, fire_time, run_id)

    def append_event(self, *, actor: str, action: str, run_id: int | None, body: dict[str, Any]) -> None:
        audit.append(self.conn, actor=actor, action=action, run_id=run_id, body=body)

    def append_event_once(self, *, actor: str, action: str, body: dict[str, Any], match: Sequence[str]) -> bool:
        return audit.append_once(self.conn, actor=actor, action=action, body=body, match=match)


class PostgresRunStore:
    """bot.ports.RunStore over a Database pool; `event_key` MACs the `requested`/`approved` events
    (bot.storage.keys.Keys.event_mac_key: the database never holds it)."""

    def __init__(self, db: Database, event_key: bytes) -> None:
        self.db, self.event_key = db, event_key

    @contextmanager
    def transaction(self, timeout: float | None = None) -> Iterator[PostgresTransaction]:
        with self.db.transaction(timeout) as conn:
            yield PostgresTransaction(conn, self.event_key)
