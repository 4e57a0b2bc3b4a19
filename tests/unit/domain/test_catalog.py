"""Runbook front matter validation: every mistake names the file and the key."""

from __future__ import annotations

from typing import Any

import pytest

from bot.domain.catalog import Catalog, parse_runbook, split_front_matter
from bot.errors import CatalogError

BASE: dict[str, Any] = {
    "name": "demo", "title": "Demo", "playbook": "demo.yml",
    "parameters": {"namespace": {"type": "str", "required": True, "pattern": "^[a-z]+$"}},
    "approval": {"required": 1, "approvers": ["group:sre"], "ttl": "15m"},
    "lock": "k8s/{namespace}",
}


def _parse(**changes: Any) -> Any:
    data = {**BASE, **changes}
    return parse_runbook({k: v for k, v in data.items() if v is not None}, "guide", "runbooks/demo.md")


def test_valid_front_matter_parses() -> None:
    """A valid runbook parses into typed fields (durations in seconds)."""
    rb = _parse()
    assert rb.approval.ttl_seconds == 900
    assert rb.parameter("namespace") is not None
    assert rb.lock == "k8s/{namespace}"


@pytest.mark.parametrize(("changes", "key"), [
    ({"colour": "red"}, "colour"),
    ({"parameters": {"namespace": {"type": "str", "pattern": "([a-z"}}}, "parameters.namespace.pattern"),
    ({"parameters": {"namespace": {"type": "str", "pattern": "k8s_namespac"}}}, "parameters.namespace.pattern"),
    ({"parameters": {"namespace": {"type": "float"}}}, "parameters.namespace.type"),
    ({"parameters": {"namespace": {"type": "str", "requird": True}}}, "parameters.namespace.requird"),
    ({"parameters": {"n": {"type": "int", "min": 5, "max": 1}}}, "parameters.n.min"),
    ({"parameters": {"n": {"type": "choice"}}}, "parameters.n.choices"),
    ({"parameters": {"runbook_run_id": {"type": "str"}}}, "parameters.runbook_run_id"),
    ({"lock": "k8s/{deployment}"}, "lock"),
    ({"parameters": {"namespace": {"type": "str"}}}, "lock"),
    ({"approval": {"required": 2}}, "approval.approvers"),
    ({"approval": {"required": 1, "approvers": ["group:sre"], "ttl": "soon"}}, "approval.ttl"),
    ({"approval": {"required": 1, "approvers": ["group:sre"], "quorum": 2}}, "approval.quorum"),
    ({"schedule": "0 4 * * 1"}, "approval.scheduled"),
    ({"schedule": "daily"}, "schedule"),
    ({"name": "Bad Name"}, "name"),
    ({"title": None}, "title"),
])
def test_mistakes_name_the_key(changes: dict[str, Any], key: str) -> None:
    """Each invalid front matter raises CatalogError naming the offending key."""
    with pytest.raises(CatalogError) as err:
        _parse(**changes)
    assert err.value.key == key
    assert str(err.value).startswith(f"runbooks/demo.md: {key}: ")


def test_secret_parameters_cannot_form_lock_keys() -> None:
    """A lock template may not leak a secret into the runs table."""
    with pytest.raises(CatalogError, match="secret"):
        _parse(parameters={"namespace": {"type": "str", "secret": True}})


def test_scheduled_runbook_needs_defaults() -> None:
    """A scheduled runbook must be runnable unattended: every required parameter needs a default."""
    with pytest.raises(CatalogError, match="default"):
        _parse(schedule="0 4 * * 1", approval={"required": 1, "approvers": ["group:sre"], "scheduled": "preapproved"})


def test_front_matter_must_be_delimited() -> None:
    """A file without --- delimiters is refused."""
    with pytest.raises(CatalogError, match="front matter"):
        split_front_matter("# no front matter", "x.md")
    assert split_front_matter("---\na: 1\n---\nbody\n", "x.md") == ("a: 1\n", "body\n")


def test_duplicate_names_are_refused() -> None:
    """Two files declaring the same runbook name cannot both load."""
    with pytest.raises(CatalogError, match="duplicate"):
        Catalog([_parse(), _parse()])


def test_guide_sections_split_by_heading() -> None:
    """The guide text is available per section for `help NAME`."""
    rb = parse_runbook(BASE, "intro\n## Symptoms\nslow\n## Rollback\nundo\n", "x.md")
    assert rb.guide_sections() == {"intro": "intro", "symptoms": "slow", "rollback": "undo"}


def test_a_named_pattern_resolves_to_the_shared_expression() -> None:
    """`pattern: k8s_namespace` means the DNS-label expression of bot/domain/patterns.py."""
    from bot.domain.patterns import PATTERNS

    rb = _parse(parameters={"namespace": {"type": "str", "required": True, "pattern": "k8s_namespace"}})
    param = rb.parameter("namespace")
    assert param is not None and param.pattern is not None
    assert param.pattern.pattern == PATTERNS["k8s_namespace"]
