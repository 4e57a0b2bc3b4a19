"""Policy: who may request, approve and cancel (the one place authorization is decided)."""

from __future__ import annotations

import pytest

from bot.domain.catalog import parse_runbook
from bot.domain.policy import cancel_allowed, check_decision, check_request, may_request
from bot.errors import AlreadyDecided, ConfigError, NotAllowedToRequest, NotAnApprover, SelfApproval
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
