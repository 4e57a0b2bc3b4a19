"""Who may request and who may approve: the one place authorization is decided (as errbot's ACL filter).

The operators file says who is who (bot.config loads it into a Directory). Slack user groups are
resolved through a `SlackGroups` port: the Slack front end supplies one; elsewhere none is needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from bot.domain.catalog import Runbook
from bot.domain.ids import OperatorName
from bot.errors import (
    AlreadyDecided,
    NotAllowedToRequest,
    NotAnApprover,
    NotApproved,
    PolicyError,
    QuorumUnreachable,
    SelfApproval,
    UnknownOperator,
)

GROUP = "group:"  # a runbook principal naming a group of the operators file: `group:sre`
SLACK_GROUP = "slack-group:"  # a group member naming a Slack user group: `slack-group:S0SRE`


def group_name(principal: str) -> str | None:
    """The group a runbook principal names (`group:sre` -> `sre`); None for an operator name."""
    return principal[len(GROUP):] if principal.startswith(GROUP) else None


def slack_group_id(member: str) -> str | None:
    """The Slack user group a group member names (`slack-group:S0SRE` -> `S0SRE`); None for an operator."""
    return member[len(SLACK_GROUP):] if member.startswith(SLACK_GROUP) else None


def groups_named(runbooks: Iterable[Runbook]) -> list[str]:
    """The groups the runbooks' approvers and requesters name, sorted."""
    return sorted({g for rb in runbooks for p in (*rb.approval.approvers, *rb.approval.requesters)
                   if (g := group_name(p)) is not None})


class SlackGroups(Protocol):
    def members(self, group_id: str) -> frozenset[str] | None:
        """Slack user ids in the user group, or None when the workspace has no user groups."""


@dataclass(frozen=True)
class Operator:
    name: OperatorName
    slack_id: str | None = None


@dataclass(frozen=True)
class Directory:
    """Operators, groups (operator names or `slack-group:ID`) and channels."""

    operators: Mapping[str, Operator] = field(default_factory=dict)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    channels: Mapping[str, str] = field(default_factory=dict)
    command_channels: tuple[str, ...] = ()

    def operator(self, name: str) -> Operator:
        op = self.operators.get(name)
        if op is None:
            raise UnknownOperator(
                f"{name!r} is not an operator: add it under `operators:` in the operators file "
                "(RUNBOOK_BOT_CONFIG)"
            )
        return op

    def by_slack_id(self, slack_id: str) -> Operator | None:
        return next((op for op in self.operators.values() if op.slack_id == slack_id), None)

    def is_member(self, op: Operator, principal: str, slack: SlackGroups | None = None) -> bool:
        """Is `op` the principal (an operator name) or in it (`group:NAME`)?"""
        group = group_name(principal)
        if group is None:
            return principal == op.name
        for member in self.groups.get(group, ()):
            if member == op.name:
                return True
            slack_group = slack_group_id(member)
            if slack_group is not None and slack is not None and op.slack_id:
                ids = slack.members(slack_group)
                if ids is not None and op.slack_id in ids:
                    return True
        return False

    def needs_slack(self, principals: Iterable[str]) -> bool:
        """Does deciding whether someone is one of `principals` involve a Slack user group (a Web API call)?"""
        return any(slack_group_id(member) is not None for p in principals if (group := group_name(p)) is not None
                   for member in self.groups.get(group, ()))

    def in_any(self, op: Operator, principals: Iterable[str], slack: SlackGroups | None = None) -> bool:
        return any(self.is_member(op, p, slack) for p in principals)


def check_request(directory: Directory, runbook: Runbook, requester: Operator,
                  slack: SlackGroups | None = None) -> None:
    """Raise NotAllowedToRequest unless `requester` may request `runbook`."""
    req = runbook.approval.requesters
    if req and not directory.in_any(requester, req, slack):
        raise NotAllowedToRequest(
            f"{requester.name} may not request {runbook.name}: requesters are {', '.join(req)}"
        )


def may_request(directory: Directory, runbook: Runbook, op: Operator, slack: SlackGroups | None = None) -> bool:
    try:
        check_request(directory, runbook, op, slack)
    except NotAllowedToRequest:
        return False
    return True


def eligible_approvers(directory: Directory, runbook: Runbook, requester: Operator) -> frozenset[str] | None:
    """Operators who could approve a request by `requester`, or None when a Slack user group is among the
    approvers (its members are known to Slack only, so they cannot be counted here)."""
    names: set[str] = set()
    for principal in runbook.approval.approvers:
        group = group_name(principal)
        if group is None:
            if principal in directory.operators:
                names.add(principal)
            continue
        for member in directory.groups.get(group, ()):
            if slack_group_id(member) is not None:
                return None
            names.add(member)
    if not runbook.approval.allow_self:
        names.discard(requester.name)
    return frozenset(names)


def check_quorum_reachable(directory: Directory, runbook: Runbook, requester: Operator) -> None:
    """Raise QuorumUnreachable when fewer operators can approve than the runbook requires: such a request
    could only wait, holding its lock, until it expires."""
    need = runbook.approval.required
    eligible = eligible_approvers(directory, runbook, requester) if need else None
    if eligible is None or len(eligible) >= need:
        return
    who = ", ".join(sorted(eligible)) or "nobody"
    mine = "" if runbook.approval.allow_self else " other than you"
    raise QuorumUnreachable(
        f"{runbook.name} needs {need} approvals from {', '.join(runbook.approval.approvers)}, but only "
        f"{len(eligible)} operator(s){mine} can approve ({who}): add approvers to those groups in the "
        "operators file (RUNBOOK_BOT_CONFIG); nothing was requested"
    )


def check_decision(directory: Directory, runbook: Runbook, requester: str, decider: Operator,
                   earlier_deciders: Iterable[str], slack: SlackGroups | None = None) -> None:
    """Raise unless `decider` may approve or deny this request now."""
    if decider.name in set(earlier_deciders):
        raise AlreadyDecided(f"{decider.name} has already decided on this request")
    if decider.name == requester and not runbook.approval.allow_self:
        raise SelfApproval(f"{decider.name}: you requested this run; another approver must decide")
    if not directory.in_any(decider, runbook.approval.approvers, slack):
        raise NotAnApprover(
            f"{decider.name} may not approve {runbook.name}: approvers are "
            f"{', '.join(runbook.approval.approvers) or 'nobody'}"
        )


def cancel_allowed(directory: Directory, runbook: Runbook, requester: str, actor: Operator,
                   slack: SlackGroups | None = None) -> bool:
    """The requester or any approver of the runbook may cancel a run."""
    return actor.name == requester or directory.in_any(actor, runbook.approval.approvers, slack)


@dataclass(frozen=True)
class RecordedApproval:
    """One `approved` event as the audit chain recorded it."""

    approver: str
    plan_hash: str
    at: datetime
    mac_ok: bool = True  # the event's MAC (key outside the database) matched


@dataclass(frozen=True)
class ApprovalRecord:
    """What the stores say about a run's approvals, gathered by the worker just before it executes the run.

    `requester`, `requested_at`, `requested_plan_hash` and `requested_by_scheduler` come from the audit
    chain's `requested` event; the `row_*` fields and `table_approvers` from the runs and approvals tables.
    """

    requester: str | None
    requested_at: datetime | None
    requested_plan_hash: str | None
    requested_by_scheduler: bool
    row_requester: str
    row_plan_hash: str
    row_scheduled: bool
    table_approvers: frozenset[str]
    audited: tuple[RecordedApproval, ...]
    denied: bool
    requested_mac_ok: bool = True  # the `requested` event's MAC (key outside the database) matched


def check_execution(directory: Directory, runbook: Runbook, record: ApprovalRecord,
                    slack: SlackGroups | None = None) -> None:
    """Raise NotApproved unless the run may execute under the runbook's CURRENT policy.

    An approval counts only when its audit event carries a valid MAC (a key the database does not hold,
    so holding the database credentials is not enough to forge one), both the approvals table and the
    audit chain hold it, it approved this
    run's plan hash, it came before the request's ttl ran out, and `check_decision` (distinct, eligible,
    not the requester unless allowed) accepts its approver. The count is the runbook's `approval.required`,
    never the run row's copy; a scheduled run needs none when the runbook says `scheduled: preapproved`
    and both the trail and the row say the scheduler requested it.
    """
    def refuse(why: str) -> NotApproved:
        return NotApproved(f"not approved: {why}")

    if record.requester is None or record.requested_at is None:
        raise refuse("the audit trail has no `requested` event for this run")
    if not record.requested_mac_ok:
        raise refuse("the `requested` event's MAC does not match: it was not written by this bot (or under "
                     "another RUNBOOK_BOT_SECRET_KEY); request the run again")
    if record.requester != record.row_requester:
        raise refuse(f"the run row names {record.row_requester} as requester, the audit trail {record.requester}")
    if record.requested_plan_hash != record.row_plan_hash:
        raise refuse("the run row's plan hash differs from the one recorded when it was requested")
    if record.denied:
        raise refuse("it was denied")
    policy = runbook.approval
    if policy.required == 0:
        return
    if policy.scheduled_preapproved and runbook.schedule and record.row_scheduled and record.requested_by_scheduler:
        return
    deadline = record.requested_at + timedelta(seconds=policy.ttl_seconds)
    valid: list[str] = []
    problems: list[str] = []
    for approval in record.audited:
        name = approval.approver
        if not approval.mac_ok:
            problems.append(f"{name}: the approval's MAC does not match (not written by this bot)")
            continue
        if name not in record.table_approvers:
            problems.append(f"{name}: in the audit trail but not in the approvals table")
            continue
        if approval.plan_hash != record.row_plan_hash:
            problems.append(f"{name}: approved another plan ({approval.plan_hash[:12]})")
            continue
        if approval.at > deadline:
            problems.append(f"{name}: approved after the approval window (ttl) closed")
            continue
        try:
            check_decision(directory, runbook, record.requester, directory.operator(name), valid, slack)
        except AlreadyDecided:
            continue  # the same person twice counts once
        except PolicyError as e:
            problems.append(str(e))
            continue
        valid.append(name)
    audited = {a.approver for a in record.audited}
    problems += [f"{name}: in the approvals table but not in the audit trail"
                 for name in sorted(record.table_approvers - audited)]
    if len(valid) < policy.required:
        detail = f" ({'; '.join(problems)})" if problems else ""
        raise refuse(f"needs {policy.required} approval(s) under the runbook's current policy, "
                     f"has {len(valid)} valid{detail}")
