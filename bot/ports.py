"""The ports RunService depends on: the run store, the playbook runner, the clock, the event listeners.

RunService talks to the world only through these Protocols, so it can be assembled over PostgreSQL and
ansible-runner (bot.composition: bot.storage.run_store.PostgresRunStore, bot.execution.runner.AnsibleRunner)
or over the in-memory implementations shipped in bot.testing (fast unit tests, no PostgreSQL, no
ansible-playbook).

    RunService ──> RunStore.transaction() ──> RunTransaction   runs, approvals, audit events, locks, ...
               ──> PlaybookRunner.run(Job) -> Outcome
               ──> Clock                                     backoff while the store is down
               ──> RunEvents (listeners)                     after each committed change of a run

The store's guarantees, kept by every implementation: a transaction commits all of its writes or none
(an exception inside `with store.transaction()` rolls it back); `transition` changes a run's state only
along bot.domain.runs.TRANSITIONS and appends the state's audit event in the same transaction; a lock key
is held by at most one active run (`insert` raises LockHeld); `get(..., for_update=True)` serializes
concurrent changes of one run; an unreachable store raises StorageError ("nothing was changed").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from bot.domain.ids import RunId
from bot.domain.policy import ApprovalRecord
from bot.domain.runs import NewRun, Run, RunEvent, RunState
from bot.execution.runner import Job, Outcome, ProcessesSink, Progress, ProgressSink, StopCheck

if TYPE_CHECKING:
    from bot.storage.anchors import AnchorRead


class RunTransaction(Protocol):
    """The store's operations inside one transaction (RunStore.transaction)."""

    # ------------------------------------------------------------ runs
    def insert(self, new: NewRun) -> RunId:
        """Insert the run with its `requested` (and `queued`) audit events; LockHeld when its lock is taken."""

    def get(self, run_id: int, *, for_update: bool = False) -> Run:
        """The run with its approvals (RunNotFound if none); `for_update` locks it until the end."""

    def list_runs(self, *, limit: int = 50, runbook: str | None = None,
             states: Sequence[RunState] | None = None) -> list[Run]:
        """Runs, newest first (without their approvals)."""

    def lock_holder(self, lock_key: str) -> RunId | None:
        """The active run holding `lock_key`, if any."""

    def now(self) -> datetime:
        """The store's clock (what expiry is measured against)."""

    def transition(self, run: Run, dst: RunState, *, actor: str, body: dict[str, Any] | None = None,
                   summary: list[str] | None = None, result: dict[str, Any] | None = None,
                   error: str | None = None, worker: str | None = None) -> Run:
        """Move `run` from its state to `dst` and append the audit event; RunStateError when it moved on."""

    # ------------------------------------------------------------ approvals and cancel
    def record_decision(self, run: Run, approver: str, decision: str, comment: str) -> None:
        """An approvals row (and, for an approval, its MACed `approved` audit event)."""

    def approval_record(self, run: Run) -> ApprovalRecord:
        """The run's approvals as the tables and the audit trail each hold them, MACs checked."""

    def request_cancel(self, run: Run, actor: str) -> None:
        """Flag a running run for its worker to end, with a `cancel_requested` audit event."""

    # ------------------------------------------------------------ execution
    def claim_next(self, worker: str, *, host: str | None = None,
                   processes: dict[str, Any] | None = None) -> Run | None:
        """Start the oldest queued run no one else is claiming (None when none)."""

    def secret_blob(self, run_id: int) -> bytes | None:
        """The run's sealed secret values (gone once the run is final)."""

    def set_process_group(self, run_id: int, group: dict[str, Any]) -> None:
        """Where a running run's processes are about to start."""

    def ownership(self, run_id: int) -> tuple[str | None, dict[str, Any]]:
        """(host, processes record) of a run."""

    def note_error(self, run_id: int, error: str) -> None:
        """Say why a running run is held (no state change, no audit event)."""

    def heartbeat(self, run_ids: Sequence[int]) -> dict[int, bool]:
        """Refresh the heartbeats of these running runs; run id -> cancel requested."""

    def stale_running(self, stale_after_seconds: float, *, for_update: bool = True) -> list[Run]:
        """Running runs without a heartbeat for `stale_after_seconds`."""

    def lock_if_stale(self, run_id: int, stale_after_seconds: float) -> Run | None:
        """The run, locked, if it is still running without a recent heartbeat."""

    def overdue_pending(self) -> list[Run]:
        """Pending runs whose approval window closed (locked)."""

    # ------------------------------------------------------------ notifications, reports, the scheduler
    def set_notify(self, run_id: int, notify: dict[str, Any]) -> None:
        """Merge keys into the run's `notify` (where its Slack card is, who posted what)."""

    def runs_with_result_key(self, key: str, *, runbook: str | None = None, limit: int = 200) -> list[Run]:
        """Runs whose result carries `key`, newest first."""

    def counts_by_state(self) -> dict[str, int]:
        """How many runs are in each state."""

    def claim_schedule_fire(self, job_id: str, fire_time: datetime) -> bool:
        """True for the first caller of this (job, fire time): only it requests the run."""

    def set_schedule_fire_run(self, job_id: str, fire_time: datetime, run_id: int) -> None:
        """The run a schedule fire became."""

    def append_event(self, *, actor: str, action: str, run_id: int | None, body: dict[str, Any]) -> None:
        """An audit event that is no transition (e.g. `schedule_refused`)."""

    def append_event_once(self, *, actor: str, action: str, body: dict[str, Any], match: Sequence[str]) -> bool:
        """Append unless an event with this action and the same `match` fields of `body` exists
        (serialized between concurrent callers); True when it was appended."""


class RunStore(Protocol):
    """Where runs, approvals and their audit trail are kept."""

    def transaction(self, timeout: float | None = None) -> AbstractContextManager[RunTransaction]:
        """One transaction: committed at the end of the `with`, rolled back on an exception. With
        `timeout`, waiting and each statement are bounded by it; StorageError when the store is down."""


class PlaybookRunner(Protocol):
    """What RunService needs of bot.execution.runner.AnsibleRunner."""

    @property
    def kill_grace_seconds(self) -> float:
        """Between SIGTERM and SIGKILL when a run's processes are ended."""

    def run(self, job: Job, *, on_progress: ProgressSink | None = None, should_stop: StopCheck = ...,
            on_processes: ProcessesSink | None = None) -> Outcome:
        """Run the job to its end, or until `should_stop` asks (Outcome status canceled / interrupted)."""

    def discard_run_files(self, ident: str, secrets: list[str]) -> None:
        """After a crashed worker's run was ended: its private files go, its artifacts lose raw values."""


class CancelTracker(Protocol):
    """Supplied by the worker pool: heartbeats the run and says when it must stop (cancel or shutdown)."""

    def track(self, run_id: RunId) -> StopCheck: ...

    def untrack(self, run_id: RunId) -> None: ...


class Clock(Protocol):
    """Time as RunService sees it (bot.testing.ManualClock moves it by hand)."""

    def now(self) -> datetime:
        """Wall-clock time, timezone-aware UTC."""

    def monotonic(self) -> float:
        """Seconds for measuring intervals."""

    def sleep(self, seconds: float) -> None:
        """Wait (a manual clock advances instead)."""


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


RunListener = Callable[[Run, RunEvent], None]
ProgressListener = Callable[[Run, Progress], None]


class RunEvents(Protocol):
    """A notifier: told of each committed change of a run, and of the progress of running ones.

    Called on the threads that cause the events (front ends, workers, ansible-runner's event handler):
    an implementation returns quickly (the Slack notifier only enqueues).
    """

    def on_run(self, run: Run, event: RunEvent) -> None: ...

    def on_progress(self, run: Run, progress: Progress) -> None: ...


class AuditAnchors(Protocol):
    """Copies of the audit head kept outside the store (bot.storage.anchors.Anchorer)."""

    def after_commit(self, *, final: bool) -> None:
        """Anchor the current head after a change committed (fail-open: never raises)."""

    def read_all(self) -> list[AnchorRead]: ...

    def metrics(self) -> list[str]: ...

    def close(self, timeout: float = 10.0) -> None: ...
