"""The SlackGroups port over usergroups.users.list, against the fake Web API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slack_sdk import WebClient

from bot.slack.groups import SlackGroupResolver
from tests.fakes.slack_api import FakeSlack, running_fake_slack


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with running_fake_slack() as f:
        f.usergroups["S0SRE"] = ["U0EVE", "U0BOB"]
        yield f


def _resolver(fake: FakeSlack, ttl: float = 60.0) -> SlackGroupResolver:
    return SlackGroupResolver(WebClient(token="xoxb-test", base_url=fake.url), ttl=ttl)


def test_members_are_the_groups_user_ids(fake: FakeSlack) -> None:
    """A user group resolves to its members' Slack user ids."""
    assert _resolver(fake).members("S0SRE") == frozenset({"U0EVE", "U0BOB"})


def test_members_are_cached(fake: FakeSlack) -> None:
    """Within the cache lifetime the API is asked once per group."""
    resolver = _resolver(fake)
    resolver.members("S0SRE")
    resolver.members("S0SRE")
    assert len(fake.of("usergroups.users.list")) == 1


def test_cache_expires(fake: FakeSlack) -> None:
    """After the cache lifetime membership is asked again (a removed member loses approval rights)."""
    resolver = _resolver(fake, ttl=0.0)
    resolver.members("S0SRE")
    fake.usergroups["S0SRE"] = ["U0BOB"]
    assert resolver.members("S0SRE") == frozenset({"U0BOB"})


def test_plan_without_user_groups_defers_to_the_operators_file(fake: FakeSlack) -> None:
    """When the workspace plan has no user groups the answer is None (the operators file alone decides)."""
    fake.no_user_groups = True
    assert _resolver(fake).members("S0SRE") is None


def test_unknown_group_has_no_members(fake: FakeSlack) -> None:
    """An unknown group (or any API failure) makes nobody a member: fail closed."""
    assert _resolver(fake).members("S0NOPE") == frozenset()
