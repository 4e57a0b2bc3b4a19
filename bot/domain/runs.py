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
