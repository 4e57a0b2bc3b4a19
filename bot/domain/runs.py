"""Run states and the transitions between them (the run state machine)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.domain.ids import RunId


class RunState(enum.StrEnum):
    PENDING_APPROVAL = "pending_approval"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    DENIED = "denied"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def active(self) -> bool:
        return self in ACTIVE


ACTIVE = frozenset({RunState.PENDING_APPROVAL, RunState.QUEUED, RunState.RUNNING})
TERMINAL = frozenset(RunState) - ACTIVE

TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.PENDING_APPROVAL: frozenset({
        RunState.QUEUED, RunState.DENIED, RunState.EXPIRED, RunState.CANCELLED,
    }),
    RunState.QUEUED: frozenset({RunState.RUNNING, RunState.CANCELLED}),
    RunState.RUNNING: frozenset({
        RunState.SUCCEEDED, RunState.FAILED, RunState.TIMED_OUT, RunState.CANCELLED, RunState.INTERRUPTED,
    }),
}

# The audit action recorded for entering each state.
ACTION_FOR_STATE: dict[RunState, str] = {
    RunState.PENDING_APPROVAL: "requested",
    RunState.QUEUED: "queued",
    RunState.RUNNING: "started",
    RunState.SUCCEEDED: "succeeded",
    RunState.FAILED: "failed",
    RunState.TIMED_OUT: "timed_out",
    RunState.CANCELLED: "cancelled",
    RunState.INTERRUPTED: "interrupted",
    RunState.DENIED: "denied",
    RunState.EXPIRED: "expired",
}

# ansible-runner status -> final run state.
RUNNER_STATUS: dict[str, RunState] = {
    "successful": RunState.SUCCEEDED,
    "failed": RunState.FAILED,
    "timeout": RunState.TIMED_OUT,
    "canceled": RunState.CANCELLED,
}


def can_transition(src: RunState, dst: RunState) -> bool:
    return dst in TRANSITIONS.get(src, frozenset())


class RunEvent(enum.StrEnum):
    """What RunService tells its listeners after a change of a run committed (bot.ports.RunEvents)."""

    REQUESTED = "requested"  # a new run (pending approval, or queued when it needs none)
    APPROVED = "approved"  # one approval recorded; more are needed
    QUEUED = "queued"  # the last approval needed (or none needed): waiting for a worker
    DENIED = "denied"
    EXPIRED = "expired"
    CANCEL_REQUESTED = "cancel_requested"  # cancel asked of a running run: its worker ends it
    STARTED = "started"  # a worker claimed it
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @classmethod
    def entering(cls, state: RunState) -> RunEvent:
        """The event of a run that reached `state` (pending_approval: requested, running: started)."""
        return cls(ACTION_FOR_STATE[state])

    @property
    def ended(self) -> bool:
        """The run finished after it was queued: it has an outcome to report (not denied or expired)."""
        return self in ENDED_EVENTS


ENDED_EVENTS = frozenset({RunEvent.SUCCEEDED, RunEvent.FAILED, RunEvent.TIMED_OUT, RunEvent.CANCELLED,
                          RunEvent.INTERRUPTED})


@dataclass(frozen=True)
class Approval:
    approver: str
    decision: str  # "approve" | "deny"
    comment: str
    at: datetime


@dataclass(frozen=True)
class Run:
    """A run as stored (secret parameter values are never here: they are masked or HMACs)."""

    id: RunId
    runbook: str
    state: RunState
    params: dict[str, Any]
    requested_by: str
    reason: str
    plan: dict[str, Any]
    plan_hash: str
    lock_key: str | None
    approvals_required: int
    created_at: datetime
    expires_at: datetime | None
    source: str = "cli"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    summary: list[str] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    approvals: tuple[Approval, ...] = ()
    notify: dict[str, Any] = field(default_factory=dict)
    cancel_requested: bool = False
    cancelled_by: str | None = None  # who asked for the cancel (from the audit trail), when cancelled

    @property
    def approvers(self) -> list[str]:
        return [a.approver for a in self.approvals if a.decision == "approve"]

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


@dataclass(frozen=True)
class NewRun:
    """A run to insert (bot.ports.RunTransaction.insert): `params` are protected (secret values as HMACs)."""

    runbook: str
    state: RunState  # pending_approval, or queued when no approval is needed
    params: dict[str, Any]
    requested_by: str
    reason: str
    source: str
    plan: dict[str, Any]
    plan_hash: str
    lock_key: str | None
    approvals_required: int
    ttl_seconds: int
    notify: dict[str, Any]
    secret_blob: bytes | None = None  # the secret values, sealed (bot.storage.keys.Keys.seal)
    schedule_key: str | None = None
