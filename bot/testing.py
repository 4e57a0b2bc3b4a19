"""In-memory fakes of our ports, shipped with the package so tests need no monkeypatching."""

from __future__ import annotations

from collections.abc import Mapping

from bot.config import parse_directory
from bot.domain.policy import Directory


class StaticSlackGroups:
    """A SlackGroups port with fixed membership; None for every group = a plan without user groups."""

    def __init__(self, groups: Mapping[str, set[str]] | None) -> None:
        self.groups = groups
        self.calls: list[str] = []

    def members(self, group_id: str) -> frozenset[str] | None:
        self.calls.append(group_id)
        if self.groups is None:
            return None
        return frozenset(self.groups.get(group_id, set()))


def directory(yaml_like: Mapping[str, object]) -> Directory:
    """A Directory from the same structure as the operators file."""
    return parse_directory(dict(yaml_like), "test operators")
