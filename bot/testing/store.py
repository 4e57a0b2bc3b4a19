"""An in-memory bot.ports.RunStore: runs, approvals, secrets and the audit events in Python lists.

It keeps the guarantees of the PostgreSQL store: a transaction commits all of its writes or none (an
exception inside the `with` restores what was there), transitions follow bot.domain.runs.can_transition and
append their audit event in the same transaction, a lock key is held by at most one active run, and the
`requested`/`approved` events carry the same MACs (bot.storage.trail), so the approval gate reads them as
the worker reads PostgreSQL. Transactions are serialized (one lock): `for_update` is always honoured.

`go_down()` / `fail_next(n)` make transactions raise StorageError, as a database that went away does.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from bot.domain.ids import RunId
from bot.domain.plan import canonical_json, sha256_hex
from bot.domain.policy import ApprovalRecord
from bot.domain.runs import ACTION_FOR_STATE, ACTIVE, Approval, NewRun, Run, RunState, can_transition
from bot.errors import LockHeld, RunNotFound, RunStateError, StorageError
from bot.ports import Clock, SystemClock
from bot.storage import trail
from bot.storage.trail import GENESIS, AuditEvent

TEST_EVENT_KEY = b"bot.testing event MAC key"


@dataclass
class _Row:
    run: Run  # approvals and cancelled_by are filled in when read
    schedule_key: str | None = None
    worker: str | None = None
    host: str | None = None
    processes: dict[str, Any] | None = None
    heartbeat_at: datetime | None = None


@dataclass
class _Tables:
    rows: dict[int, _Row] = field(default_factory=dict)
    approvals: dict[int, list[Approval]] = field(default_factory=dict)
    secrets: dict[int, bytes] = field(default_factory=dict)
    events: list[AuditEvent] = field(default_factory=list)
    fires: dict[tuple[str, datetime], int | None] = field(default_factory=dict)
    next_id: int = 1


def _plain(value: dict[str, Any]) -> dict[str, Any]:
    """What a jsonb column gives back: a copy, with values JSON can hold."""
    out: dict[str, Any] = json.loads(json.dumps(value, default=str))
    return out


class InMemoryTransaction:
    """bot.ports.RunTransaction over the store's tables (only valid inside its `with`)."""

    def __init__(self, store: InMemoryRunStore) -> None:
        self._store = store
        self._t = store._tables
        self._now = store.clock.now()  # like PostgreSQL's now(): the transaction's start

    # ------------------------------------------------------------ helpers
    def _row(self, run_id: int) -> _Row:
        row = self._t.rows.get(int(run_id))
        if row is None:
            raise RunNotFound(f"no run {run_id}: list runs with `runbook-bot runs`")
        return row

    def _event(self, actor: str, action: str, run_id: int | None, body: dict[str, Any]) -> None:
        """Chained like the PostgreSQL trail, over canonical JSON (not PostgreSQL's jsonb text)."""
        events, clean = self._t.events, _plain(body)
        prev = events[-1].hash if events else GENESIS
        document = canonical_json({"at": self._now.isoformat(), "run_id": run_id, "actor": actor,
                                   "action": action, "body": clean})
        events.append(AuditEvent(len(events) + 1, self._now, run_id, actor, action, clean, prev,
                                 sha256_hex(prev + document)))

    def _update(self, row: _Row, **changes: Any) -> None:
        row.run = replace(row.run, **changes)

    # ------------------------------------------------------------ runs
    def insert(self, new: NewRun) -> RunId:
        if new.lock_key is not None:
            holder = self.lock_holder(new.lock_key)
            if holder is not None:
                raise LockHeld(new.lock_key, holder)
        run_id = RunId(self._t.next_id)
        self._t.next_id += 1
        run = Run(
            id=run_id, runbook=new.runbook, state=new.state, params=_plain(new.params),
            requested_by=new.requested_by, reason=new.reason, source=new.source, plan=_plain(new.plan),
            plan_hash=new.plan_hash, lock_key=new.lock_key, approvals_required=new.approvals_required,
            created_at=self._now, expires_at=self._now + timedelta(seconds=new.ttl_seconds),
            notify=_plain(new.notify),
        )
        self._t.rows[run_id] = _Row(run, schedule_key=new.schedule_key)
        if new.secret_blob is not None:
            self._t.secrets[run_id] = new.secret_blob
        for actor, action, rid, body in trail.requested_events(
                run_id, runbook=new.runbook, state=new.state, params=run.params, requested_by=new.requested_by,
                reason=new.reason, source=new.source, plan_hash=new.plan_hash, lock_key=new.lock_key,
                approvals_required=new.approvals_required, schedule_key=new.schedule_key,
                event_key=self._store.event_key):
            self._event(actor, action, rid, body)
        return run_id

    def _read(self, row: _Row) -> Run:
        run_id = row.run.id
        who = None
        if row.run.state is RunState.CANCELLED or row.run.cancel_requested:
            who = trail.cancelled_by(e for e in self._t.events if e.run_id == run_id)
        approvals = tuple(sorted(self._t.approvals.get(run_id, []), key=lambda a: a.at))
        return replace(row.run, approvals=approvals, cancelled_by=who)

    def get(self, run_id: int, *, for_update: bool = False) -> Run:
        return self._read(self._row(run_id))

    def list_runs(self, *, limit: int = 50, runbook: str | None = None,
                  states: Sequence[RunState] | None = None) -> list[Run]:
        rows = [r.run for r in sorted(self._t.rows.values(), key=lambda r: -r.run.id)
                if (not runbook or r.run.runbook == runbook) and (not states or r.run.state in states)]
        return rows[:limit]

    def lock_holder(self, lock_key: str) -> RunId | None:
        return next((r.run.id for r in sorted(self._t.rows.values(), key=lambda r: r.run.id)
                     if r.run.lock_key == lock_key and r.run.state in ACTIVE), None)

    def now(self) -> datetime:
        return self._now

    def transition(self, run: Run, dst: RunState, *, actor: str, body: dict[str, Any] | None = None,
                   summary: list[str] | None = None, result: dict[str, Any] | None = None,
                   error: str | None = None, worker: str | None = None) -> Run:
        if not can_transition(run.state, dst):
            raise RunStateError(f"run {run.id} is {run.state.value}; it cannot become {dst.value}")
        row = self._row(run.id)
        if row.run.state is not run.state:
            raise RunStateError(f"run {run.id} is now {row.run.state.value}; it cannot become {dst.value}")
        changes: dict[str, Any] = {"state": dst}
        if dst is RunState.RUNNING:
            changes["started_at"] = self._now
            row.heartbeat_at, row.worker = self._now, worker
        if dst.terminal:
            changes["finished_at"] = self._now
            self._t.secrets.pop(run.id, None)
        if summary is not None:
            changes["summary"] = list(summary)
        if result is not None:
            changes["result"] = _plain(result)
        if error is not None:
            changes["error"] = error
        elif dst.terminal:
            changes["error"] = None
        self._update(row, **changes)
        self._event(actor, ACTION_FOR_STATE[dst], run.id, trail.transition_body(run.state, dst, body, error))
        who = self._read(row).cancelled_by if dst is RunState.CANCELLED else None
        return replace(row.run, approvals=run.approvals, cancelled_by=who)

    # ------------------------------------------------------------ approvals and cancel
    def record_decision(self, run: Run, approver: str, decision: str, comment: str) -> None:
        self._t.approvals.setdefault(run.id, []).append(Approval(approver, decision, comment, self._now))
        if decision == "approve":
            self._event(approver, "approved", run.id,
                        trail.approved_body(run.id, run.plan_hash, approver, comment, self._store.event_key))

    def approval_record(self, run: Run) -> ApprovalRecord:
        row = self._row(run.id)
        return trail.approval_record(
            run.id, row_requester=row.run.requested_by, row_plan_hash=row.run.plan_hash,
            row_source=row.run.source, row_schedule_key=row.schedule_key,
            decisions=self._t.approvals.get(run.id, []),
            events=[e for e in self._t.events if e.run_id == run.id], event_key=self._store.event_key)

    def request_cancel(self, run: Run, actor: str) -> None:
        self._update(self._row(run.id), cancel_requested=True)
        self._event(actor, "cancel_requested", run.id, {"state": run.state.value})

    # ------------------------------------------------------------ execution
    def claim_next(self, worker: str, *, host: str | None = None,
                   processes: dict[str, Any] | None = None) -> Run | None:
        queued = sorted((r for r in self._t.rows.values() if r.run.state is RunState.QUEUED), key=lambda r: r.run.id)
        if not queued:
            return None
        row = queued[0]
        started = self.transition(self._read(row), RunState.RUNNING, actor=f"worker:{worker}", worker=worker,
                                  body={"worker": worker})
        row.host, row.processes = host, (copy.deepcopy(processes) if processes is not None else None)
        return started

    def secret_blob(self, run_id: int) -> bytes | None:
        return self._t.secrets.get(int(run_id))

    def set_process_group(self, run_id: int, group: dict[str, Any]) -> None:
        row = self._t.rows.get(int(run_id))
        if row is not None and row.run.state is RunState.RUNNING:
            row.processes = {**(row.processes or {}), "group": _plain(group)}

    def ownership(self, run_id: int) -> tuple[str | None, dict[str, Any]]:
        row = self._t.rows.get(int(run_id))
        if row is None:
            return None, {}
        return row.host, copy.deepcopy(row.processes or {})

    def note_error(self, run_id: int, error: str) -> None:
        row = self._t.rows.get(int(run_id))
        if row is not None and row.run.state is RunState.RUNNING:
            self._update(row, error=error)

    def heartbeat(self, run_ids: Sequence[int]) -> dict[int, bool]:
        out: dict[int, bool] = {}
        for run_id in run_ids:
            row = self._t.rows.get(int(run_id))
            if row is not None and row.run.state is RunState.RUNNING:
                row.heartbeat_at = self._now
                self._update(row, error=None)
                out[int(run_id)] = row.run.cancel_requested
        return out

    def _stale(self, row: _Row, stale_after_seconds: float) -> bool:
        return (row.run.state is RunState.RUNNING and row.heartbeat_at is not None
                and row.heartbeat_at < self._now - timedelta(seconds=stale_after_seconds))

    def stale_running(self, stale_after_seconds: float, *, for_update: bool = True) -> list[Run]:
        return [r.run for r in self._t.rows.values() if self._stale(r, stale_after_seconds)]

    def lock_if_stale(self, run_id: int, stale_after_seconds: float) -> Run | None:
        row = self._t.rows.get(int(run_id))
        return row.run if row is not None and self._stale(row, stale_after_seconds) else None

    def overdue_pending(self) -> list[Run]:
        return [r.run for r in self._t.rows.values() if r.run.state is RunState.PENDING_APPROVAL
                and r.run.expires_at is not None and r.run.expires_at <= self._now]

    # ------------------------------------------------------------ notifications, reports, the scheduler
    def set_notify(self, run_id: int, notify: dict[str, Any]) -> None:
        row = self._t.rows.get(int(run_id))
        if row is not None:
            self._update(row, notify={**row.run.notify, **_plain(notify)})

    def runs_with_result_key(self, key: str, *, runbook: str | None = None, limit: int = 200) -> list[Run]:
        return [r.run for r in sorted(self._t.rows.values(), key=lambda r: -r.run.id)
                if key in r.run.result and (not runbook or r.run.runbook == runbook)][:limit]

    def counts_by_state(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self._t.rows.values():
            counts[r.run.state.value] = counts.get(r.run.state.value, 0) + 1
        return counts

    def claim_schedule_fire(self, job_id: str, fire_time: datetime) -> bool:
        if (job_id, fire_time) in self._t.fires:
            return False
        self._t.fires[(job_id, fire_time)] = None
        return True

    def set_schedule_fire_run(self, job_id: str, fire_time: datetime, run_id: int) -> None:
        if (job_id, fire_time) in self._t.fires:
            self._t.fires[(job_id, fire_time)] = run_id

    def append_event(self, *, actor: str, action: str, run_id: int | None, body: dict[str, Any]) -> None:
        self._event(actor, action, run_id, body)

    def append_event_once(self, *, actor: str, action: str, body: dict[str, Any], match: Sequence[str]) -> bool:
        wanted = {k: str(body.get(k)) for k in match}
        if any(e.action == action and all(str(e.body.get(k)) == v for k, v in wanted.items())
               for e in self._t.events):
            return False
        self._event(actor, action, None, body)
        return True


class InMemoryRunStore:
    """bot.ports.RunStore in memory. `clock` dates rows and events and measures expiry and heartbeats."""

    def __init__(self, clock: Clock | None = None, *, event_key: bytes = TEST_EVENT_KEY) -> None:
        self.clock = clock or SystemClock()
        self.event_key = event_key
        self._tables = _Tables()
        self._lock = threading.RLock()
        self._failures = 0
        self.down = False
        self.transactions = 0  # begun, committed or not

    # ------------------------------------------------------------ simulating a database that went away
    def go_down(self) -> None:
        self.down = True

    def come_back(self) -> None:
        self.down = False
        self._failures = 0

    def fail_next(self, count: int = 1) -> None:
        """The next `count` transactions raise StorageError before doing anything."""
        self._failures = count

    @contextmanager
    def transaction(self, timeout: float | None = None) -> Iterator[InMemoryTransaction]:
        with self._lock:
            self.transactions += 1
            if self.down or self._failures > 0:
                self._failures = max(0, self._failures - 1)
                raise StorageError("database down: the in-memory store is down (bot.testing); nothing was changed")
            saved = copy.deepcopy(self._tables)
            try:
                yield InMemoryTransaction(self)
            except BaseException:
                self._tables = saved
                raise

    # ------------------------------------------------------------ what tests look at
    @property
    def events(self) -> list[AuditEvent]:
        """Every audit event, in order."""
        with self._lock:
            return list(self._tables.events)

    def actions(self, run_id: int) -> list[str]:
        """The audit actions of one run, in order."""
        return [e.action for e in self.events if e.run_id == run_id]

    def events_for(self, run_id: int) -> list[AuditEvent]:
        return [e for e in self.events if e.run_id == run_id]

    def schedule_fires(self) -> dict[tuple[str, datetime], int | None]:
        with self._lock:
            return dict(self._tables.fires)

    def tamper(self, run_id: int, **changes: Any) -> Run:
        """Change a run's row behind the service's back (a forged `state`, `plan_hash`, ...), no event."""
        with self._lock:
            row = self._tables.rows[int(run_id)]
            row.run = replace(row.run, **changes)
            return row.run
