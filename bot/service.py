"""RunService: the one spine every front end (CLI, Slack, scheduler) calls.

request -> policy + parameters + plan (check mode) -> runs row (+ lock) -> approvals -> queued ->
a worker claims it, re-checks the plan, runs the playbook, records the outcome. Every transition writes
its audit event in the same transaction (bot.storage.runs).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bot.catalog_files import playbook_path, playbook_sha256
from bot.domain.catalog import Catalog, Runbook
from bot.domain.ids import RunId
from bot.domain.params import lock_key, validate_params
from bot.domain.plan import Plan, protected_params
from bot.domain.policy import (
    Directory,
    Operator,
    SlackGroups,
    cancel_allowed,
    check_decision,
    check_quorum_reachable,
    check_request,
)
from bot.domain.runs import RUNNER_STATUS, Run, RunState
from bot.domain.text import check_free_text
from bot.errors import (
    LockHeld,
    PlanError,
    PolicyError,
    RequestExpired,
    RunbookBotError,
    RunFinished,
    RunStateError,
)
from bot.execution.redaction import Redactor
from bot.execution.runner import AnsibleRunner, Job, Outcome, Progress
from bot.storage import runs as repo
from bot.storage.database import Database
from bot.storage.keys import Keys

log = logging.getLogger(__name__)

RunListener = Callable[[Run, str], None]
ProgressListener = Callable[[Run, Progress], None]


class CancelTracker(Protocol):
    """Supplied by the worker pool: heartbeats the run and says when cancel was requested."""

    def track(self, run_id: RunId) -> Callable[[], bool]: ...

    def untrack(self, run_id: RunId) -> None: ...


@dataclass(frozen=True)
class RequestResult:
    run: Run
    plan: Plan
    approvals_needed: int


@dataclass
class RunService:
    db: Database
    catalog: Catalog
    directory: Directory
    keys: Keys
    runner: AnsibleRunner
    playbooks_dir: Path
    inventory: Path
    slack_groups: SlackGroups | None = None
    run_listeners: list[RunListener] = field(default_factory=list)
    progress_listeners: list[ProgressListener] = field(default_factory=list)

    # ----------------------------------------------------------------- queries
    def runbook(self, name: str) -> Runbook:
        return self.catalog.get(name)

    def requestable(self, op: Operator) -> list[Runbook]:
        out = []
        for rb in self.catalog:
            try:
                check_request(self.directory, rb, op, self.slack_groups)
            except PolicyError:
                continue
            out.append(rb)
        return out

    def get(self, run_id: int, *, timeout: float | None = None) -> Run:
        with self.db.transaction(timeout) as conn:
            return repo.get_run(conn, run_id)

    def runs(self, *, limit: int = 50, runbook: str | None = None,
             states: list[RunState] | None = None, timeout: float | None = None) -> list[Run]:
        with self.db.transaction(timeout) as conn:
            return repo.list_runs(conn, limit=limit, runbook=runbook, states=states)

    # ----------------------------------------------------------------- plan
    def plan(self, runbook: Runbook, values: Mapping[str, Any], *, ident: str) -> Plan:
        """The plan for these values: parameters (secrets as HMACs), playbook hash, check-mode output."""
        path = playbook_path(runbook, self.playbooks_dir)
        try:
            digest = playbook_sha256(path)
        except OSError as e:
            raise PlanError(f"cannot read playbook {path}: {e.strerror}") from None
        params = protected_params(values, runbook.secret_names, self.keys.audit_hmac)
        if not runbook.check_mode:
            return Plan(runbook.name, params, digest)
        outcome = self.runner.run(self._job(runbook, values, ident=f"{ident}-check", check=True))
        if outcome.status != "successful":
            why = "; ".join(outcome.failures[:3]) or f"ansible-playbook ended {outcome.status} (rc {outcome.rc})"
            raise PlanError(f"check mode failed for {runbook.name}: {why}")
        lines = outcome.stats.get("plan")
        check_output = [str(x) for x in lines] if isinstance(lines, list) else (
            [str(lines)] if lines else [f"{c['status']}: [{c['host']}] {c['task']}" for c in outcome.changes]
        )
        return Plan(runbook.name, params, digest, check_output=check_output)

    def _job(self, runbook: Runbook, values: Mapping[str, Any], *, ident: str, check: bool,
             run_id: int | None = None) -> Job:
        extravars = dict(values)
        extravars["runbook_name"] = runbook.name
        if run_id is not None:
            extravars["runbook_run_id"] = str(run_id)
        return Job(
            ident=ident, playbook=playbook_path(runbook, self.playbooks_dir), project_dir=self.playbooks_dir,
            inventory=self.inventory, extravars=extravars,
            secrets=[str(values[n]) for n in runbook.secret_names if values.get(n) not in (None, "")],
            timeout_seconds=runbook.timeout_seconds, idle_timeout_seconds=runbook.idle_timeout_seconds,
            check=check,
        )

    # ----------------------------------------------------------------- request
    def request(self, name: str, raw: Mapping[str, Any], requester: Operator, *, reason: str = "",
                source: str = "cli", notify: Mapping[str, Any] | None = None,
                schedule_key: str | None = None, preapproved: bool = False) -> RequestResult:
        runbook = self.catalog.get(name)
        check_free_text("reason", reason)
        if not preapproved:
            check_request(self.directory, runbook, requester, self.slack_groups)
            check_quorum_reachable(self.directory, runbook, requester)
        values = validate_params(runbook, raw)
        key = lock_key(runbook, values)
        if key is not None:
            self._refuse_if_locked(key)
        plan = self.plan(runbook, values, ident=f"req-{runbook.name}")
        required = 0 if preapproved else runbook.approval.required
        state = RunState.QUEUED if required == 0 else RunState.PENDING_APPROVAL
        secret_values = {n: values[n] for n in runbook.secret_names if n in values}
        with self.db.transaction() as conn:
            run_id = repo.insert_run(
                conn, runbook=runbook.name, state=state, params=plan.params, requested_by=requester.name,
                reason=reason, source=source, plan=plan.as_dict(), plan_hash=plan.hash, lock_key=key,
                approvals_required=required, ttl_seconds=runbook.approval.ttl_seconds, notify=dict(notify or {}),
                secret_blob=self.keys.seal(secret_values) if secret_values else None, schedule_key=schedule_key,
            )
            run = repo.get_run(conn, run_id)
        self._emit(run, "requested")
        return RequestResult(run, plan, required)

    def _refuse_if_locked(self, key: str) -> None:
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT id FROM runs WHERE lock_key = %s AND state IN ('pending_approval','queued','running')",
                (key,),
            ).fetchone()
        if row is not None:
            raise LockHeld(key, int(row["id"]))

    # ----------------------------------------------------------------- decisions
    def approve(self, run_id: int, approver: Operator, comment: str = "") -> Run:
        return self._decide(run_id, approver, "approve", comment)

    def deny(self, run_id: int, approver: Operator, comment: str = "") -> Run:
        return self._decide(run_id, approver, "deny", comment)

    def _decide(self, run_id: int, actor: Operator, decision: str, comment: str) -> Run:
        check_free_text("comment", comment)
        expired: Run | None = None
        with self.db.transaction() as conn:
            run = repo.get_run(conn, run_id, for_update=True)  # serializes concurrent decisions on this run
            if run.state is not RunState.PENDING_APPROVAL:
                raise RunStateError(f"run {run.id} is {run.state.value}, not waiting for approval")
            if run.expires_at is not None and run.expires_at <= repo.db_now(conn):
                expired = repo.transition(conn, run, RunState.EXPIRED, actor="system",
                                          body={"why": "approval window (ttl) passed"})
            else:
                runbook = self.catalog.get(run.runbook)
                check_decision(self.directory, runbook, run.requested_by, actor,
                               [a.approver for a in run.approvals], self.slack_groups)
                repo.record_decision(conn, run, actor.name, decision, comment)
                if decision == "deny":
                    run = repo.transition(conn, run, RunState.DENIED, actor=actor.name,
                                          body={"comment": comment})
                else:
                    run = repo.get_run(conn, run_id)
                    if len(run.approvers) >= run.approvals_required:
                        run = repo.transition(conn, run, RunState.QUEUED, actor=actor.name,
                                              body={"approvers": run.approvers})
        if expired is not None:
            self._emit(expired, "expired")
            raise RequestExpired(f"run {run_id} expired at {expired.expires_at:%Y-%m-%d %H:%M:%S %Z}; "
                                 "request it again")
        self._emit(run, "denied" if decision == "deny" else ("queued" if run.state is RunState.QUEUED
                                                               else "approved"))
        return run

    def cancel(self, run_id: int, actor: Operator) -> Run:
        with self.db.transaction() as conn:
            run = repo.get_run(conn, run_id, for_update=True)
            if run.state.terminal:
                raise RunFinished(f"run {run.id} already finished ({run.state.value}); nothing to cancel")
            runbook = self.catalog.get(run.runbook)
            if not cancel_allowed(self.directory, runbook, run.requested_by, actor, self.slack_groups):
                raise PolicyError(f"{actor.name} may not cancel run {run.id}: only its requester or an approver")
            if run.state is RunState.RUNNING:
                repo.request_cancel(conn, run, actor.name)
                run = repo.get_run(conn, run_id)
                event = "cancel_requested"
            else:
                run = repo.transition(conn, run, RunState.CANCELLED, actor=actor.name, body={})
                event = "cancelled"
        self._emit(run, event)
        return run

    # ----------------------------------------------------------------- housekeeping
    def expire_overdue(self) -> list[Run]:
        with self.db.transaction() as conn:
            done = [repo.transition(conn, r, RunState.EXPIRED, actor="system",
                                    body={"why": "approval window (ttl) passed"})
                    for r in repo.overdue_pending(conn)]
        for r in done:
            self._emit(r, "expired")
        return done

    def recover_stale(self, stale_after_seconds: float) -> list[Run]:
        """Runs whose worker stopped heartbeating become `interrupted` (never re-run on their own)."""
        with self.db.transaction() as conn:
            done = [repo.transition(conn, r, RunState.INTERRUPTED, actor="system",
                                    error="the worker running it stopped (no heartbeat); it was not re-run",
                                    body={"stale_after_seconds": int(stale_after_seconds)})
                    for r in repo.stale_running(conn, stale_after_seconds)]
        for r in done:
            self._emit(r, "interrupted")
        return done

    # ----------------------------------------------------------------- execution
    def execute_next(self, worker: str, tracker: CancelTracker) -> Run | None:
        """Claim the oldest queued run and carry it to a final state. None when the queue is empty."""
        with self.db.transaction() as conn:
            run = repo.claim_next(conn, worker)
            blob = repo.secret_blob(conn, run.id) if run is not None else None
        if run is None:
            return None
        self._emit(run, "started")
        should_cancel = tracker.track(run.id)
        try:
            return self._execute(run, blob, should_cancel)
        finally:
            tracker.untrack(run.id)

    def _finish(self, run: Run, state: RunState, *, summary: list[str] | None = None,
                result: dict[str, Any] | None = None, error: str | None = None,
                body: dict[str, Any] | None = None) -> Run:
        with self.db.transaction() as conn:
            current = repo.get_run(conn, run.id, for_update=True)
            done = repo.transition(conn, current, state, actor="worker:" + socket.gethostname(),
                                   summary=summary, result=result, error=error, body=body)
        self._emit(done, state.value)
        return done

    def _execute(self, run: Run, blob: bytes | None, should_cancel: Callable[[], bool]) -> Run:
        try:
            runbook = self.catalog.get(run.runbook)
            values = dict(run.params)
            if blob is not None:
                values.update(self.keys.open(blob))
            plan = self.plan(runbook, values, ident=str(run.id))
            approved = Plan.from_dict(run.plan)
            if plan.hash != run.plan_hash:
                why = ", ".join(approved.differences(plan)) or "plan hash"
                return self._finish(
                    run, RunState.FAILED,
                    error=f"refused: the plan changed since approval ({why}); request the run again",
                    body={"refused": "plan_mismatch", "new_plan_hash": plan.hash},
                )
            redactor = Redactor([values[n] for n in runbook.secret_names if values.get(n) not in (None, "")])

            def relay(progress: Progress) -> None:
                for listener in self.progress_listeners:
                    listener(run, progress)

            outcome = self.runner.run(self._job(runbook, values, ident=str(run.id), check=False, run_id=run.id),
                                      on_progress=relay, should_cancel=should_cancel)
        except RunbookBotError as e:
            return self._finish(run, RunState.FAILED, error=str(e))
        except OSError as e:  # a full disk or an unwritable RUNBOOK_BOT_HOME: say which path and why
            where = f"{e.filename}: " if e.filename else ""
            return self._finish(run, RunState.FAILED, error=f"could not prepare the run: {where}{e.strerror or e}")
        except Exception as e:
            log.exception("run %s crashed in the worker", run.id)
            return self._finish(run, RunState.FAILED, error=f"internal error: {type(e).__name__}")
        return self._record_outcome(run, outcome, redactor)

    def _record_outcome(self, run: Run, outcome: Outcome, redactor: Redactor) -> Run:
        state = RUNNER_STATUS.get(outcome.status, RunState.FAILED)
        stats = redactor.value(outcome.stats)
        summary = stats.get("summary")
        summary_lines = [str(x) for x in summary] if isinstance(summary, list) else ([str(summary)] if summary else [])
        result = stats.get("result") if isinstance(stats.get("result"), dict) else {}
        error = None
        if state is RunState.FAILED:
            error = "; ".join(redactor.value(outcome.failures[:3])) or f"ansible-playbook exited {outcome.rc}"
        elif state is RunState.TIMED_OUT:
            error = "the playbook ran past the runbook's timeout and was stopped"
        elif state is RunState.CANCELLED:
            error = "cancelled while running"
        body = {"outcome": outcome.status, "rc": outcome.rc, "changed_tasks": len(outcome.changes)}
        return self._finish(run, state, summary=summary_lines, result=result or {}, error=error, body=body)

    # ----------------------------------------------------------------- events
    def _emit(self, run: Run, event: str) -> None:
        for listener in self.run_listeners:
            try:
                listener(run, event)
            except Exception:
                log.exception("run listener failed for run %s (%s)", run.id, event)


class LocalTracker:
    """A CancelTracker with no heartbeat (for tests and single-shot use)."""

    def __init__(self) -> None:
        self.cancelled: set[int] = set()
        self._lock = threading.Lock()

    def track(self, run_id: RunId) -> Callable[[], bool]:
        return lambda: run_id in self.cancelled

    def untrack(self, run_id: RunId) -> None:
        with self._lock:
            self.cancelled.discard(run_id)

