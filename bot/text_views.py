"""Plain-text and JSON views of runs and runbooks, shared by the CLI and the HTTP endpoints.

Text views show what people typed (reasons, comments, parameter values) through bot.domain.text:
quoted and on one line, control characters as visible escapes, so a stored value can never pass for one
of the bot's own lines (`approvals:`, `plan hash:`) or hide text on a terminal. Secret parameters are
shown as SECRET_MASK, never as the HMAC stored in their place.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot.domain.catalog import Runbook
from bot.domain.durations import format_duration
from bot.domain.runs import Run, RunState
from bot.domain.text import quoted, visible

SECRET_MASK = "••••••"  # noqa: S105 - the mask shown instead of a secret, not one
_DIGEST_PREFIX = "hmac-sha256:"  # how a secret value is stored (bot.domain.plan.secret_digest)


def _ts(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat() if dt else None


def run_json(run: Run) -> dict[str, Any]:
    return {
        "id": run.id, "runbook": run.runbook, "state": run.state.value,
        "params": {k: SECRET_MASK if _stored_secret(v) else v for k, v in run.params.items()},
        "requested_by": run.requested_by, "reason": run.reason, "source": run.source,
        "plan_hash": run.plan_hash, "plan": run.plan.get("check_output"), "lock": run.lock_key,
        "approvals_required": run.approvals_required, "approved_by": run.approvers,
        "approvals": [{"approver": a.approver, "decision": a.decision, "comment": a.comment, "at": _ts(a.at)}
                      for a in run.approvals],
        "created_at": _ts(run.created_at), "expires_at": _ts(run.expires_at),
        "started_at": _ts(run.started_at), "finished_at": _ts(run.finished_at),
        "duration_seconds": run.duration_seconds, "summary": run.summary, "result": run.result,
        "error": run.error, "cancel_requested": run.cancel_requested, "cancelled_by": run.cancelled_by,
    }


def runbook_json(rb: Runbook) -> dict[str, Any]:
    return {
        "name": rb.name, "title": rb.title, "summary": rb.summary, "playbook": rb.playbook,
        "parameters": [
            {"name": p.name, "type": p.type, "required": p.required, "default": None if p.secret else p.default,
             "pattern": p.pattern.pattern if p.pattern else None, "min": p.min, "max": p.max,
             "choices": list(p.choices), "secret": p.secret, "description": p.description}
            for p in rb.parameters
        ],
        "approval": {"required": rb.approval.required, "approvers": list(rb.approval.approvers),
                     "requesters": list(rb.approval.requesters), "allow_self": rb.approval.allow_self,
                     "ttl_seconds": rb.approval.ttl_seconds},
        "lock": rb.lock, "timeout_seconds": rb.timeout_seconds, "check_mode": rb.check_mode,
        "schedule": rb.schedule, "warning": rb.warning,
    }


def _stored_secret(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(_DIGEST_PREFIX)


def shown_value(value: Any) -> str:
    """One parameter value for display: a stored secret (its HMAC) as the mask, anything else inert."""
    if _stored_secret(value):
        return SECRET_MASK
    return visible(value)


def params_text(params: dict[str, Any], secret: frozenset[str] = frozenset()) -> str:
    """`k=v ...` with secrets masked (by name, and any stored HMAC whatever its name) and values inert."""
    return " ".join(f"{visible(k)}={SECRET_MASK if k in secret else shown_value(v)}"
                    for k, v in params.items()) or "(no parameters)"


def _decided(run: Run, decision: str) -> str:
    return ", ".join(a.approver + (f" ({quoted(a.comment)})" if a.comment else "")
                     for a in run.approvals if a.decision == decision)


def approval_status(run: Run) -> str:
    """The approvals line, true for every state: how many of how many, who approved, denied or cancelled."""
    have, need = len(run.approvers), run.approvals_required
    approved = _decided(run, "approve")
    if need == 0:
        line = "no approval required" + (f" (approved by {approved})" if approved else "")
    elif run.state is RunState.PENDING_APPROVAL or have < need:
        line = f"{have} of {need} approvals" + (f": {approved}" if approved else "")
    else:
        line = f"approved by {approved}"
    if run.state is RunState.DENIED:
        line = f"denied by {_decided(run, 'deny') or 'an approver'}; " + line
    elif run.state is RunState.EXPIRED:
        line += "; nobody decided before the request expired" if have == 0 else "; the request expired"
    if run.state is RunState.CANCELLED:
        line += f"; cancelled by {visible(run.cancelled_by)}" if run.cancelled_by else "; cancelled"
    elif run.cancel_requested and run.cancelled_by:
        line += f"; cancel requested by {visible(run.cancelled_by)}"
    return line


def run_text(run: Run) -> list[str]:
    lines = [f"run {run.id}  {run.runbook}  {run.state.value}",
             f"  parameters: {params_text(run.params)}",
             f"  requested by {visible(run.requested_by)} at {run.created_at:%Y-%m-%d %H:%M:%S %Z}",
             *([f"  reason: {quoted(run.reason)}"] if run.reason else []),
             f"  approvals: {approval_status(run)}",
             f"  plan hash: {run.plan_hash[:12]}"]
    plan = run.plan.get("check_output")
    if plan:
        lines.append("  plan:")
        lines += [f"    {visible(line)}" for line in plan]
    if run.lock_key:
        lines.append(f"  lock: {visible(run.lock_key)}")
    if run.state is RunState.PENDING_APPROVAL and run.expires_at:
        lines.append(f"  expires: {run.expires_at:%Y-%m-%d %H:%M:%S %Z}")
    if run.duration_seconds is not None:
        lines.append(f"  duration: {format_duration(run.duration_seconds)}")
    if run.summary:
        lines.append("  result:")
        lines += [f"    {visible(line)}" for line in run.summary]
    if run.error:
        lines.append(f"  error: {visible(run.error)}")
    return lines


def runbook_text(rb: Runbook) -> list[str]:
    lines = [f"{rb.name}: {rb.title}"]
    if rb.summary:
        lines.append(f"  {rb.summary}")
    if rb.warning:
        lines.append(f"  WARNING: {rb.warning}")
    lines.append("  parameters:")
    for p in rb.parameters:
        bits: list[str] = [p.type]
        if p.required:
            bits.append("required")
        if p.default is not None and not p.secret:
            bits.append(f"default {p.default}")
        if p.min is not None or p.max is not None:
            bits.append(f"{p.min if p.min is not None else ''}..{p.max if p.max is not None else ''}")
        if p.choices:
            bits.append("one of " + "|".join(p.choices))
        if p.secret:
            bits.append("secret")
        lines.append(f"    {p.name} ({', '.join(bits)}){': ' + p.description if p.description else ''}")
    if not rb.parameters:
        lines.append("    (none)")
    a = rb.approval
    if a.required == 0:
        lines.append("  approval: none required (a request is queued at once)")
    else:
        lines.append(f"  approval: {a.required} of {', '.join(a.approvers)}"
                     f"{' (self-approval allowed)' if a.allow_self else ''}; expires after "
                     f"{format_duration(a.ttl_seconds)}")
    if rb.lock:
        lines.append(f"  lock: {rb.lock}")
    lines.append(f"  timeout: {format_duration(rb.timeout_seconds)}; check mode: {'yes' if rb.check_mode else 'no'}")
    if rb.schedule:
        lines.append(f"  schedule: {rb.schedule} (UTC)")
    return lines
