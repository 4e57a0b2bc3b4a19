"""RunService: the one spine every front end (CLI, Slack, scheduler) calls.

request -> policy + parameters + plan (check mode) -> runs row (+ lock) -> approvals -> queued ->
a worker claims it, re-checks the plan, runs the playbook, records the outcome. Every transition writes
its audit event in the same transaction of the run store.

RunService depends only on the ports of bot.ports (the run store, the playbook runner, the clock, the
listeners): bot.composition assembles it over PostgreSQL and ansible-runner, bot.testing over in-memory fakes.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

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
    check_execution,
    check_quorum_reachable,
    check_request,
)
from bot.domain.runs import RUNNER_STATUS, NewRun, Run, RunEvent, RunState
from bot.domain.text import check_free_text
from bot.errors import (
    LockHeld,
    NotApproved,
    PlanError,
    PolicyError,
    RequestExpired,
    RunbookBotError,
    RunFinished,
    RunNotFound,
    RunStateError,
    StorageError,
)
from bot.execution import processes as procs
from bot.execution.processes import RunProcesses
from bot.execution.redaction import Redactor
from bot.execution.runner import Job, Outcome, ProcessesSink, Progress, StopCheck, StopRequest
from bot.ports import (
    AuditAnchors,
    CancelTracker,
    Clock,
    PlaybookRunner,
    ProgressListener,
    RunEvents,
    RunListener,
    RunStore,
    SystemClock,
)
from bot.storage.keys import Keys
from bot.storage.spool import OutcomeSpool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestResult:
    run: Run
    plan: Plan
    approvals_needed: int


@dataclass
class RunService:
    store: RunStore
    catalog: Catalog
    directory: Directory
    keys: Keys
    runner: PlaybookRunner
    playbooks_dir: Path
    inventory: Path
    slack_groups: SlackGroups | None = None
    run_listeners: list[RunListener] = field(default_factory=list)
    progress_listeners: list[ProgressListener] = field(default_factory=list)
    anchors: AuditAnchors | None = None  # copies the audit head outside the store after each transition
    spool: OutcomeSpool | None = None  # outcomes kept while the database is down (RUNBOOK_BOT_HOME/outcomes)
    retry_max_seconds: float = 30.0  # backoff cap while recording an outcome waits for the database
    clock: Clock = field(default_factory=SystemClock)

    # ----------------------------------------------------------------- listeners
    def subscribe(self, events: RunEvents) -> None:
        """Tell `events` of every committed change of a run, and of the progress of running ones."""
        self.run_listeners.append(events.on_run)
        self.progress_listeners.append(events.on_progress)

    def unsubscribe(self, events: RunEvents) -> None:
        for listeners, fn in ((self.run_listeners, events.on_run), (self.progress_listeners, events.on_progress)):
            if fn in listeners:
                listeners.remove(fn)  # type: ignore[arg-type]

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
        with self.store.transaction(timeout) as tx:
            return tx.get(run_id)

    def runs(self, *, limit: int = 50, runbook: str | None = None,
             states: list[RunState] | None = None, timeout: float | None = None) -> list[Run]:
        with self.store.transaction(timeout) as tx:
            return tx.list_runs(limit=limit, runbook=runbook, states=states)

    def runs_with_result(self, key: str, *, runbook: str | None = None, limit: int = 200) -> list[Run]:
        """Runs whose result carries `key` (restore drills carry rto_seconds), newest first."""
        with self.store.transaction() as tx:
            return tx.runs_with_result_key(key, runbook=runbook, limit=limit)

    def counts_by_state(self) -> dict[str, int]:
        with self.store.transaction() as tx:
            return tx.counts_by_state()

    # ----------------------------------------------------------------- plan
    def plan(self, runbook: Runbook, values: Mapping[str, Any], *, ident: str,
             should_stop: StopCheck | None = None, on_processes: ProcessesSink | None = None) -> Plan:
        """The plan for these values: parameters (secrets as HMACs), playbook hash, check-mode output."""
        path = playbook_path(runbook, self.playbooks_dir)
        try:
            digest = playbook_sha256(path)
        except OSError as e:
            raise PlanError(f"cannot read playbook {path}: {e.strerror}") from None
        params = protected_params(values, runbook.secret_names, self.keys.audit_hmac)
        if not runbook.check_mode:
            return Plan(runbook.name, params, digest)
        outcome = self.runner.run(self._job(runbook, values, ident=f"{ident}-check", check=True),
                                  should_stop=should_stop or (lambda: None), on_processes=on_processes)
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
        with self.store.transaction() as tx:
            run_id = tx.insert(NewRun(
                runbook=runbook.name, state=state, params=plan.params, requested_by=requester.name,
                reason=reason, source=source, plan=plan.as_dict(), plan_hash=plan.hash, lock_key=key,
                approvals_required=required, ttl_seconds=runbook.approval.ttl_seconds, notify=dict(notify or {}),
                secret_blob=self.keys.seal(secret_values) if secret_values else None, schedule_key=schedule_key,
            ))
            run = tx.get(run_id)
        self._emit(run, RunEvent.REQUESTED)
        return RequestResult(run, plan, required)

    def _refuse_if_locked(self, key: str) -> None:
        with self.store.transaction() as tx:
            holder = tx.lock_holder(key)
        if holder is not None:
            raise LockHeld(key, holder)

    # ----------------------------------------------------------------- decisions
    def approve(self, run_id: int, approver: Operator, comment: str = "") -> Run:
        return self._decide(run_id, approver, "approve", comment)

    def deny(self, run_id: int, approver: Operator, comment: str = "") -> Run:
        return self._decide(run_id, approver, "deny", comment)

    def _decide(self, run_id: int, actor: Operator, decision: str, comment: str) -> Run:
        check_free_text("comment", comment)
        expired: Run | None = None
        with self.store.transaction() as tx:
            run = tx.get(run_id, for_update=True)  # serializes concurrent decisions on this run
            if run.state is not RunState.PENDING_APPROVAL:
                raise RunStateError(f"run {run.id} is {run.state.value}, not waiting for approval")
            if run.expires_at is not None and run.expires_at <= tx.now():
                expired = tx.transition(run, RunState.EXPIRED, actor="system",
                                        body={"why": "approval window (ttl) passed"})
            else:
                runbook = self.catalog.get(run.runbook)
                check_decision(self.directory, runbook, run.requested_by, actor,
                               [a.approver for a in run.approvals], self.slack_groups)
                tx.record_decision(run, actor.name, decision, comment)
                if decision == "deny":
                    run = tx.transition(run, RunState.DENIED, actor=actor.name, body={"comment": comment})
                else:
                    run = tx.get(run_id)
                    if len(run.approvers) >= run.approvals_required:
                        run = tx.transition(run, RunState.QUEUED, actor=actor.name,
                                            body={"approvers": run.approvers})
        if expired is not None:
            self._emit(expired, RunEvent.EXPIRED)
            raise RequestExpired(f"run {run_id} expired at {expired.expires_at:%Y-%m-%d %H:%M:%S %Z}; "
                                 "request it again")
        self._emit(run, RunEvent.DENIED if decision == "deny" else (
            RunEvent.QUEUED if run.state is RunState.QUEUED else RunEvent.APPROVED))
        return run

    def cancel(self, run_id: int, actor: Operator) -> Run:
        with self.store.transaction() as tx:
            run = tx.get(run_id, for_update=True)
            if run.state.terminal:
                raise RunFinished(f"run {run.id} already finished ({run.state.value}); nothing to cancel")
            runbook = self.catalog.get(run.runbook)
            if not cancel_allowed(self.directory, runbook, run.requested_by, actor, self.slack_groups):
                raise PolicyError(f"{actor.name} may not cancel run {run.id}: only its requester or an approver")
            if run.state is RunState.RUNNING:
                tx.request_cancel(run, actor.name)
                run = tx.get(run_id)
                event = RunEvent.CANCEL_REQUESTED
            else:
                run = tx.transition(run, RunState.CANCELLED, actor=actor.name, body={})
                event = RunEvent.CANCELLED
        self._emit(run, event)
        return run

    # ----------------------------------------------------------------- housekeeping
    def expire_overdue(self) -> list[Run]:
        with self.store.transaction() as tx:
            done = [tx.transition(r, RunState.EXPIRED, actor="system", body={"why": "approval window (ttl) passed"})
                    for r in tx.overdue_pending()]
        for r in done:
            self._emit(r, RunEvent.EXPIRED)
        return done

    def recover_stale(self, stale_after_seconds: float) -> list[Run]:
        """Runs whose worker stopped heartbeating. Outcomes kept on this host are recorded first. A run
        of this host whose worker is gone has its processes ended, its private files and secrets removed,
        and becomes `interrupted` (never re-run on its own). A run owned by another host stays running,
        lock held, saying so in its error: only the owning host can see and end its processes."""
        done = self.record_spooled()
        with self.store.transaction() as tx:
            stale = tx.stale_running(stale_after_seconds, for_update=False)
        for run in stale:
            try:
                finished = self._recover(run, stale_after_seconds)
            except RunbookBotError as e:
                log.warning("run %s: stale-run recovery failed: %s", run.id, e)
                continue
            if finished is not None:
                done.append(finished)
        return done

    def _recover(self, run: Run, stale_after_seconds: float) -> Run | None:
        with self.store.transaction() as tx:
            host, record = tx.ownership(run.id)
        here = procs.host_name()
        if host is not None and host != here:
            with self.store.transaction() as tx:
                tx.note_error(run.id, f"its worker stopped heartbeating; owner host {host} has not "
                                              "confirmed its processes ended; lock held")
            return None
        if self.spool is not None and self.spool.get(run.id) is not None:
            return None  # its outcome is kept here and is recorded as soon as the database takes it
        if host is not None and procs.owner_alive({**record, "host": host}):
            return None  # its worker still runs here (it cannot reach the database): the run is not lost
        ended = "it was claimed before processes were recorded"
        group = record.get("group")
        if isinstance(group, dict):
            processes = RunProcesses.from_record(group)
            left = processes.end(self.runner.kill_grace_seconds)
            if left:
                with self.store.transaction() as tx:
                    tx.note_error(run.id, f"its worker stopped; processes {left} of the run survived "
                                            "SIGKILL; lock held until they end")
                return None
            processes.release()
            if processes.local:
                ended = "its processes were ended"
            elif processes.host == here:
                ended = "this host restarted since it started, so its processes are gone"
            else:
                ended = f"it was handed to {here}; its processes on {processes.host} were not checked"
        with self.store.transaction() as tx:
            blob = tx.secret_blob(run.id)
        secrets = [str(v) for v in (self.keys.open(blob).values() if blob else []) if v not in (None, "")]
        self.runner.discard_run_files(str(run.id), secrets)
        with self.store.transaction() as tx:
            current = tx.lock_if_stale(run.id, stale_after_seconds)
            if current is None:
                return None  # it heartbeated again, or someone else finished it meanwhile
            finished = tx.transition(
                current, RunState.INTERRUPTED, actor="system",
                error=f"the worker running it stopped (no heartbeat); {ended}; it was not re-run",
                body={"stale_after_seconds": int(stale_after_seconds), "host": host, "ended": ended},
            )
        self._emit(finished, RunEvent.INTERRUPTED)
        return finished

    def record_spooled(self) -> list[Run]:
        """Record the outcomes this host kept while the database was down (at start-up and each sweep)."""
        if self.spool is None:
            return []
        done: list[Run] = []
        for run_id in self.spool.pending():
            outcome = self.spool.get(run_id)
            if outcome is None:
                continue
            try:
                run = self._write_outcome(run_id, outcome)
            except StorageError:
                break  # still down: the next sweep tries again
            if run is not None:
                done.append(run)
        return done

    # ----------------------------------------------------------------- execution
    def execute_next(self, worker: str, tracker: CancelTracker) -> Run | None:
        """Claim the oldest queued run and carry it to a final state. None when the queue is empty."""
        owner = procs.this_process()
        with self.store.transaction() as tx:
            run = tx.claim_next(worker, host=owner["host"],
                                processes={"boot_id": owner["boot_id"], "owner": owner["owner"]})
            blob = tx.secret_blob(run.id) if run is not None else None
        if run is None:
            return None
        self._emit(run, RunEvent.STARTED)
        should_stop = tracker.track(run.id)
        try:
            return self._execute(run, blob, should_stop)
        finally:
            tracker.untrack(run.id)

    def _write_outcome(self, run_id: int, outcome: Mapping[str, Any]) -> Run | None:
        """Commit a final transition; None (and nothing written) when the run is no longer running."""
        try:
            with self.store.transaction() as tx:
                current = tx.get(run_id, for_update=True)
                done = None
                if current.state is RunState.RUNNING:
                    done = tx.transition(current, RunState(outcome["state"]), actor=str(outcome["actor"]),
                                         summary=outcome.get("summary"), result=outcome.get("result"),
                                         error=outcome.get("error"), body=outcome.get("body"))
        except RunNotFound:
            done = None
        if self.spool is not None:
            self.spool.remove(run_id)
        if done is not None:
            self._emit(done, RunEvent.entering(done.state))
        return done

    def _finish(self, run: Run, state: RunState, *, summary: list[str] | None = None,
                result: dict[str, Any] | None = None, error: str | None = None,
                body: dict[str, Any] | None = None, should_stop: StopCheck | None = None) -> Run:
        """Record the final state. With the database down the outcome is kept (spooled to a 0600 file, and
        in memory) and retried with backoff until it is recorded; it is never lost or turned into a guess."""
        outcome: dict[str, Any] = {"state": state.value, "actor": "worker:" + socket.gethostname(),
                                   "summary": summary, "result": result, "error": error, "body": body or {}}
        try:
            return self._write_outcome(run.id, outcome) or self.get(run.id)
        except StorageError as e:
            log.warning("run %s ended %s but the database is unreachable (%s); keeping the outcome",
                        run.id, state.value, e)
        outcome["body"] = {**outcome["body"], "ended_at": self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "recorded_late": True}
        if self.spool is not None:
            try:
                self.spool.put(run.id, outcome)
            except OSError as e:
                log.error("run %s: cannot keep its outcome in %s (%s); retrying from memory only",
                          run.id, self.spool.directory, e.strerror)
        delay = 0.5
        while True:
            deadline = self.clock.monotonic() + delay
            while self.clock.monotonic() < deadline:
                request = should_stop() if should_stop is not None else None
                if request is not None and request.kind == "shutdown":
                    raise StorageError(f"run {run.id}: outcome not recorded yet (kept for the next worker)")
                self.clock.sleep(min(0.25, max(0.0, deadline - self.clock.monotonic())))
            try:
                return self._write_outcome(run.id, outcome) or self.get(run.id)
            except StorageError as e:
                delay = min(delay * 2, self.retry_max_seconds)
                log.warning("run %s: still cannot record its outcome (%s); retrying in %.0fs", run.id, e, delay)

    def _finish_stopped(self, run: Run, request: StopRequest, should_stop: StopCheck) -> Run:
        if request.kind == "cancel":
            return self._finish(run, RunState.CANCELLED, error="cancelled while running; its processes were ended",
                                body={"outcome": "canceled"}, should_stop=should_stop)
        return self._finish(run, RunState.INTERRUPTED, should_stop=should_stop, body={"outcome": "interrupted"},
                            error=f"{request.why or 'the worker stopped'}; the playbook was ended and not re-run")

    def _execute(self, run: Run, blob: bytes | None, should_stop: StopCheck) -> Run:
        def record(processes: RunProcesses) -> None:
            with self.store.transaction() as tx:
                tx.set_process_group(run.id, processes.as_record())

        try:
            request = should_stop()
            if request is not None:  # cancelled, or the worker began stopping, as it claimed the run
                return self._finish_stopped(run, request, should_stop)
            runbook = self.catalog.get(run.runbook)
            self._check_approved(run, runbook)
            values = dict(run.params)
            if blob is not None:
                values.update(self.keys.open(blob))
            try:
                plan = self.plan(runbook, values, ident=str(run.id), should_stop=should_stop, on_processes=record)
            except PlanError:
                request = should_stop()
                if request is None:
                    raise
                return self._finish_stopped(run, request, should_stop)
            approved = Plan.from_dict(run.plan)
            if plan.hash != run.plan_hash:
                why = ", ".join(approved.differences(plan)) or "plan hash"
                return self._finish(
                    run, RunState.FAILED,
                    error=f"refused: the plan changed since approval ({why}); request the run again",
                    body={"refused": "plan_mismatch", "new_plan_hash": plan.hash}, should_stop=should_stop,
                )
            redactor = Redactor([values[n] for n in runbook.secret_names if values.get(n) not in (None, "")])

            def relay(progress: Progress) -> None:
                for listener in self.progress_listeners:
                    listener(run, progress)

            outcome = self.runner.run(self._job(runbook, values, ident=str(run.id), check=False, run_id=run.id),
                                      on_progress=relay, should_stop=should_stop, on_processes=record)
        except NotApproved as e:
            return self._finish(run, RunState.FAILED, error=f"refused: {e}", body={"refused": "not_approved"},
                                should_stop=should_stop)
        except RunbookBotError as e:
            return self._finish(run, RunState.FAILED, error=str(e), should_stop=should_stop)
        except OSError as e:  # a full disk or an unwritable RUNBOOK_BOT_HOME: say which path and why
            where = f"{e.filename}: " if e.filename else ""
            return self._finish(run, RunState.FAILED, error=f"could not prepare the run: {where}{e.strerror or e}",
                                should_stop=should_stop)
        except Exception as e:
            log.exception("run %s crashed in the worker", run.id)
            return self._finish(run, RunState.FAILED, error=f"internal error: {type(e).__name__}",
                                should_stop=should_stop)
        return self._record_outcome(run, outcome, redactor, should_stop)

    def _check_approved(self, run: Run, runbook: Runbook) -> None:
        """Raise NotApproved unless the tables AND the audit chain show the approvals the runbook's current
        policy needs (a row set to `queued` by hand, or a forged approvals row, is refused here)."""
        with self.store.transaction() as tx:
            record = tx.approval_record(run)
        check_execution(self.directory, runbook, record, self.slack_groups)

    def _record_outcome(self, run: Run, outcome: Outcome, redactor: Redactor, should_stop: StopCheck) -> Run:
        if outcome.status == "interrupted":
            return self._finish_stopped(run, StopRequest("shutdown", outcome.stop_why), should_stop)
        state = RUNNER_STATUS.get(outcome.status, RunState.FAILED)
        stats = redactor.value(outcome.stats)
        summary = stats.get("summary")
        summary_lines = [str(x) for x in summary] if isinstance(summary, list) else ([str(summary)] if summary else [])
        result = stats.get("result") if isinstance(stats.get("result"), dict) else {}
        error = None
        if state is RunState.FAILED:
            error = "; ".join(redactor.value(outcome.failures[:3])) or f"ansible-playbook exited {outcome.rc}"
        elif state is RunState.TIMED_OUT:
            error = f"the playbook {outcome.stop_why or 'ran past the runbook timeout'}; its processes were ended"
        elif state is RunState.CANCELLED:
            error = "cancelled while running; its processes were ended"
        body = {"outcome": outcome.status, "rc": outcome.rc, "changed_tasks": len(outcome.changes)}
        return self._finish(run, state, summary=summary_lines, result=result or {}, error=error, body=body,
                            should_stop=should_stop)

    def heartbeat(self, run_ids: Sequence[int]) -> dict[int, bool]:
        """Refresh the heartbeats of running runs a worker executes; run id -> cancel requested."""
        with self.store.transaction() as tx:
            return tx.heartbeat(run_ids)

    # ----------------------------------------------------------------- notifications and schedules
    def claim_notify(self, run_id: int, key: str, *also: str, claimant: str) -> Run | None:
        """Mark `key` in the run's notify under its row lock, naming the claimant; None when it (or any of
        `also`) is already set. Whichever process claims first posts that message, once."""
        with self.store.transaction() as tx:
            current = tx.get(run_id, for_update=True)
            if any(current.notify.get(k) for k in (key, *also)):
                return None
            tx.set_notify(run_id, {key: claimant})
        return current

    def set_notify(self, run_id: int, notify: dict[str, Any]) -> None:
        """Merge keys into the run's notify (where its Slack card and messages are)."""
        with self.store.transaction() as tx:
            tx.set_notify(run_id, notify)

    def claim_schedule_fire(self, job_id: str, fire_time: datetime) -> bool:
        """True for the one caller (of every replica) that may request the run of this scheduled fire."""
        with self.store.transaction() as tx:
            return tx.claim_schedule_fire(job_id, fire_time)

    def link_schedule_fire(self, job_id: str, fire_time: datetime, run_id: int) -> None:
        with self.store.transaction() as tx:
            tx.set_schedule_fire_run(job_id, fire_time, run_id)

    def record_event(self, actor: str, action: str, body: dict[str, Any], *, run_id: int | None = None) -> None:
        """An audit event that is no transition (a refused scheduled fire)."""
        with self.store.transaction() as tx:
            tx.append_event(actor=actor, action=action, run_id=run_id, body=body)

    def record_event_once(self, actor: str, action: str, body: dict[str, Any], *, match: Sequence[str]) -> bool:
        """Append unless an event of `action` with the same `match` fields exists; True when appended
        (an alert said once per episode, whichever replica or restart gets there first)."""
        with self.store.transaction() as tx:
            return tx.append_event_once(actor=actor, action=action, body=body, match=match)

    # ----------------------------------------------------------------- events
    def _emit(self, run: Run, event: RunEvent) -> None:
        """After a transition committed: anchor the audit head (fail-open), then tell the listeners."""
        if self.anchors is not None:
            try:
                self.anchors.after_commit(final=run.state.terminal)
            except Exception:
                log.exception("audit anchoring failed after run %s (%s); the run is unaffected", run.id, event)
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

    def track(self, run_id: RunId) -> StopCheck:
        return lambda: StopRequest("cancel") if run_id in self.cancelled else None

    def untrack(self, run_id: RunId) -> None:
        with self._lock:
            self.cancelled.discard(run_id)

