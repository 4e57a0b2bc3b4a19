"""What a run's audit events say, and what they show about its approvals.

Shared by every run store (bot.storage.runs over PostgreSQL, bot.testing.InMemoryRunStore), so both write
the same events and read approvals the same way. No I/O here.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from bot.domain.policy import ApprovalRecord, RecordedApproval
from bot.domain.runs import Approval, RunState
from bot.storage.keys import event_mac

GENESIS = "0" * 64  # the prev_hash of the first event
TrailEntry = tuple[str, str, int | None, dict[str, Any]]  # (actor, action, run_id, body)


@dataclass(frozen=True)
class AuditEvent:
    """One event of the audit chain: hash = sha256(prev_hash || the event's canonical document)."""

    seq: int
    at: datetime
    run_id: int | None
    actor: str
    action: str
    body: dict[str, Any]
    prev_hash: str
    hash: str


class TrailEvent(Protocol):
    """An audit event as a store returns it."""

    @property
    def actor(self) -> str: ...

    @property
    def action(self) -> str: ...

    @property
    def at(self) -> datetime: ...

    @property
    def body(self) -> dict[str, Any]: ...


def requested_events(run_id: int, *, runbook: str, state: RunState, params: dict[str, Any], requested_by: str,
                     reason: str, source: str, plan_hash: str, lock_key: str | None, approvals_required: int,
                     schedule_key: str | None, event_key: bytes | None) -> list[TrailEntry]:
    """The `requested` event of a new run (MACed with `event_key`), and `queued` when it needs no approval."""
    body = {"runbook": runbook, "params": params, "reason": reason, "source": source, "plan_hash": plan_hash,
            "lock": lock_key, "approvals_required": approvals_required}
    if schedule_key is not None:
        body["schedule_key"] = schedule_key
    if event_key is not None:
        body["mac"] = event_mac(event_key, "requested", run_id, requested_by, plan_hash, source, schedule_key)
    events: list[TrailEntry] = [(requested_by, "requested", run_id, body)]
    if state is RunState.QUEUED:
        events.append((requested_by, "queued", run_id, {"outcome": "queued", "why": "no approval required"}))
    return events


def transition_body(src: RunState, dst: RunState, body: dict[str, Any] | None, error: str | None) -> dict[str, Any]:
    """The body of the audit event of a state change."""
    event = {"from": src.value, "to": dst.value, **(body or {})}
    if error:
        event["error"] = error
    return event


def approved_body(run_id: int, plan_hash: str, approver: str, comment: str,
                  event_key: bytes | None) -> dict[str, Any]:
    """The body of an `approved` event (MACed with `event_key`)."""
    body = {"comment": comment, "plan_hash": plan_hash}
    if event_key is not None:
        body["mac"] = event_mac(event_key, "approved", run_id, approver, plan_hash)
    return body


def cancelled_by(events: Iterable[TrailEvent]) -> str | None:
    """Who cancelled the run (or asked a worker to): the actor of its first cancel event."""
    return next((e.actor for e in events if e.action in ("cancel_requested", "cancelled")), None)


def approval_record(run_id: int, *, row_requester: str, row_plan_hash: str, row_source: str,
                    row_schedule_key: str | None, decisions: Sequence[Approval], events: Sequence[TrailEvent],
                    event_key: bytes) -> ApprovalRecord:
    """The run's approvals as its row, its approvals rows and its audit events (in order) each hold them;
    each `requested`/`approved` event's MAC is checked with `event_key` (which the store never holds)."""
    requested = next((e for e in events if e.action == "requested"), None)
    req_body = requested.body if requested is not None else {}
    by_scheduler = (requested is not None and req_body.get("source") == "scheduler"
                    and req_body.get("schedule_key") == row_schedule_key)

    def mac_ok(given: Any, action: str, *fields: object) -> bool:
        return isinstance(given, str) and hmac.compare_digest(given, event_mac(event_key, action, run_id, *fields))

    return ApprovalRecord(
        requester=requested.actor if requested is not None else None,
        requested_at=requested.at if requested is not None else None,
        requested_plan_hash=str(req_body.get("plan_hash")) if requested is not None else None,
        requested_by_scheduler=by_scheduler,
        requested_mac_ok=requested is not None and mac_ok(
            req_body.get("mac"), "requested", requested.actor, req_body.get("plan_hash"), req_body.get("source"),
            req_body.get("schedule_key")),
        row_requester=row_requester, row_plan_hash=row_plan_hash,
        row_scheduled=row_schedule_key is not None and row_source == "scheduler",
        table_approvers=frozenset(a.approver for a in decisions if a.decision == "approve"),
        audited=tuple(RecordedApproval(e.actor, str(e.body.get("plan_hash", "")), e.at,
                                       mac_ok(e.body.get("mac"), "approved", e.actor, e.body.get("plan_hash")))
                      for e in events if e.action == "approved"),
        denied=any(a.decision == "deny" for a in decisions) or any(e.action == "denied" for e in events),
    )
