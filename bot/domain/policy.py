"""Who may request and who may approve: the one place authorization is decided (as errbot's ACL filter).

The operators file says who is who (bot.config loads it into a Directory). Slack user groups are
resolved through a `SlackGroups` port: the Slack front end supplies one; elsewhere none is needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from bot.domain.catalog import Runbook
from bot.domain.ids import OperatorName
from bot.errors import (
    AlreadyDecided,
    NotAllowedToRequest,
    NotAnApprover,
    QuorumUnreachable,
    SelfApproval,
    UnknownOperator,
)


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
        if not principal.startswith("group:"):
            return principal == op.name
        for member in self.groups.get(principal[len("group:") :], ()):
            if member == op.name:
                return True
            if member.startswith("slack-group:") and slack is not None and op.slack_id:
                ids = slack.members(member[len("slack-group:") :])
                if ids is not None and op.slack_id in ids:
                    return True
        return False

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
        if not principal.startswith("group:"):
            if principal in directory.operators:
                names.add(principal)
            continue
        for member in directory.groups.get(principal[len("group:") :], ()):
            if member.startswith("slack-group:"):
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
