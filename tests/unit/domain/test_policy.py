"""Policy: who may request, approve and cancel (the one place authorization is decided)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.catalog import parse_runbook
from bot.domain.policy import (
    ApprovalRecord,
    RecordedApproval,
    cancel_allowed,
    check_decision,
    check_execution,
    check_request,
    group_name,
    groups_named,
    may_request,
    slack_group_id,
)
from bot.errors import (
    AlreadyDecided,
    ConfigError,
    NotAllowedToRequest,
    NotAnApprover,
    NotApproved,
    SelfApproval,
)
from bot.testing import StaticSlackGroups, directory

DIR = directory({
    "operators": {"alice": {"slack": "UA"}, "bob": {"slack": "UB"}, "carol": {"slack": "UC"}, "dan": {}},
    "groups": {"sre": ["alice", "slack-group:S0SRE"], "dba": ["dan"]},
})
RB = parse_runbook({"name": "x", "title": "X", "playbook": "x.yml",
                    "approval": {"required": 1, "approvers": ["group:sre"], "requesters": ["group:sre", "dan"]}},
                   "", "x.md")


def test_requesters_restrict_who_may_request() -> None:
    """Only listed groups or operators may request when `requesters` is set."""
    check_request(DIR, RB, DIR.operator("alice"))
    check_request(DIR, RB, DIR.operator("dan"))
    with pytest.raises(NotAllowedToRequest):
        check_request(DIR, RB, DIR.operator("bob"))
    assert may_request(DIR, RB, DIR.operator("bob"), StaticSlackGroups({"S0SRE": {"UB"}}))


def test_requester_is_never_an_approver_by_default() -> None:
    """Self-approval is refused unless allow_self is true."""
    with pytest.raises(SelfApproval):
        check_decision(DIR, RB, "alice", DIR.operator("alice"), [])


def test_slack_user_group_membership_makes_an_approver() -> None:
    """A member of an approver Slack user group may approve; a non-member may not."""
    groups = StaticSlackGroups({"S0SRE": {"UB"}})
    check_decision(DIR, RB, "alice", DIR.operator("bob"), [], groups)
    with pytest.raises(NotAnApprover):
        check_decision(DIR, RB, "alice", DIR.operator("carol"), [], groups)


def test_plan_without_user_groups_falls_back_to_the_operators_file() -> None:
    """When the workspace has no user groups, only operators named in the file count."""
    no_groups = StaticSlackGroups(None)
    with pytest.raises(NotAnApprover):
        check_decision(DIR, RB, "dan", DIR.operator("bob"), [], no_groups)
    check_decision(DIR, RB, "dan", DIR.operator("alice"), [], no_groups)


def test_an_approver_decides_once() -> None:
    """A second decision by the same approver is refused."""
    with pytest.raises(AlreadyDecided):
        check_decision(DIR, RB, "dan", DIR.operator("alice"), ["alice"])


def test_cancel_by_requester_or_approver_only() -> None:
    """The requester and approvers may cancel; others may not."""
    assert cancel_allowed(DIR, RB, "dan", DIR.operator("dan"))
    assert cancel_allowed(DIR, RB, "dan", DIR.operator("alice"))
    assert not cancel_allowed(DIR, RB, "dan", DIR.operator("carol"))


def test_groups_may_only_name_known_operators() -> None:
    """A typo in a group member is a configuration error, not a silent non-match."""
    with pytest.raises(ConfigError, match="groups.sre names 'alcie'"):
        directory({"operators": {"alice": {}}, "groups": {"sre": ["alcie"]}})


def _record(audited: list[tuple[str, str, int]], *, table: set[str] | None = None, requester: str = "dan",
            plan_hash: str = "p1") -> ApprovalRecord:
    """An approval record: `audited` is (approver, plan hash, seconds after the request)."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    events = tuple(RecordedApproval(a, h, t0 + timedelta(seconds=s)) for a, h, s in audited)
    return ApprovalRecord(
        requester=requester, requested_at=t0, requested_plan_hash=plan_hash, requested_by_scheduler=False,
        row_requester=requester, row_plan_hash=plan_hash, row_scheduled=False,
        table_approvers=frozenset({a for a, _, _ in audited} if table is None else table), audited=events,
        denied=False,
    )


QUORUM = parse_runbook({"name": "q", "title": "Q", "playbook": "q.yml",
                        "approval": {"required": 2, "approvers": ["group:sre", "group:dba"], "ttl": "10m"}},
                       "", "q.md")


def test_execution_needs_the_current_count_of_distinct_valid_approvals() -> None:
    """Two distinct eligible approvers of this plan, within the ttl, pass; one approver twice does not."""
    check_execution(DIR, QUORUM, _record([("alice", "p1", 5), ("dan", "p1", 9)], requester="bob"))
    with pytest.raises(NotApproved, match="needs 2 approval"):
        check_execution(DIR, QUORUM, _record([("alice", "p1", 5), ("alice", "p1", 9)], requester="bob"))


@pytest.mark.parametrize(("audited", "fragment"), [
    ([("alice", "p1", 5), ("dan", "p2", 9)], "dan: approved another plan"),
    ([("alice", "p1", 5), ("dan", "p1", 601)], "dan: approved after the approval window"),
    ([("alice", "p1", 5), ("carol", "p1", 9)], "carol may not approve"),
    ([("alice", "p1", 5), ("bob", "p1", 9)], "bob: you requested this run"),
])
def test_execution_refuses_each_invalid_approval(audited: list[tuple[str, str, int]], fragment: str) -> None:
    """Another plan's approval, a late one, a non-approver's and the requester's own do not count."""
    with pytest.raises(NotApproved, match=fragment):
        check_execution(DIR, QUORUM, _record(audited, requester="bob"))


def test_execution_refuses_approvals_missing_from_either_store() -> None:
    """An approval only in the table or only in the audit chain does not count."""
    with pytest.raises(NotApproved, match="carol: in the approvals table but not in the audit trail"):
        check_execution(DIR, RB, _record([], table={"carol"}))
    with pytest.raises(NotApproved, match="alice: in the audit trail but not in the approvals table"):
        check_execution(DIR, RB, _record([("alice", "p1", 1)], table=set()))


def test_execution_refuses_events_without_a_valid_mac() -> None:
    """An approval or a request whose audit event MAC fails (forged with database access only) is refused."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    good = _record([("alice", "p1", 5)])
    with pytest.raises(NotApproved, match="alice: the approval's MAC does not match"):
        check_execution(DIR, RB, replace(good, audited=(RecordedApproval("alice", "p1", t0, mac_ok=False),)))
    with pytest.raises(NotApproved, match="`requested` event's MAC does not match"):
        check_execution(DIR, RB, replace(good, requested_mac_ok=False))
    check_execution(DIR, RB, good)


def test_principals_name_groups_and_slack_user_groups() -> None:
    """`group:NAME` names an operators-file group and `slack-group:ID` a Slack user group; anything else is a name."""
    assert group_name("group:sre") == "sre" and group_name("alice") is None and group_name("slack-group:S1") is None
    assert slack_group_id("slack-group:S0SRE") == "S0SRE" and slack_group_id("alice") is None


def test_groups_named_by_the_runbooks_and_whether_slack_decides() -> None:
    """The catalog's groups come from approvers and requesters; only a Slack user group member needs Slack."""
    other = parse_runbook({"name": "y", "title": "Y", "playbook": "y.yml",
                           "approval": {"required": 1, "approvers": ["group:dba", "carol"]}}, "", "y.md")
    assert groups_named([RB, other]) == ["dba", "sre"]
    assert DIR.needs_slack(RB.approval.requesters) and DIR.needs_slack(["group:sre"])
    assert not DIR.needs_slack(["group:dba", "dan"]) and not DIR.needs_slack(["group:unknown"])
