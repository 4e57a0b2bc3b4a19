"""Parameter validation: typed values out, one clear line for every mistake."""

from __future__ import annotations

import pytest

from bot.domain.catalog import parse_runbook
from bot.domain.params import lock_key, masked, parse_assignments, validate_params
from bot.errors import ParameterError

RB = parse_runbook({
    "name": "demo", "title": "Demo", "playbook": "demo.yml", "lock": "k8s/{namespace}/{deployment}",
    "parameters": {
        "namespace": {"type": "str", "required": True, "pattern": "^[a-z0-9-]+$"},
        "deployment": {"type": "str", "required": True, "pattern": "^[a-z0-9-]+$"},
        "replicas": {"type": "int", "min": 1, "max": 20, "default": 2},
        "force": {"type": "bool", "default": False},
        "kind": {"type": "choice", "choices": ["pod", "host"], "default": "pod"},
        "note": {"type": "str"},
        "password": {"type": "str", "secret": True, "pattern": "^.{8,}$"},
    },
}, "", "demo.md")


def test_values_are_typed_and_defaults_filled() -> None:
    """Text becomes int/bool; defaults fill what was not given; optional ones without default are absent."""
    v = validate_params(RB, {"namespace": "prod", "deployment": "api", "replicas": "5", "force": "yes"})
    assert v == {"namespace": "prod", "deployment": "api", "replicas": 5, "force": True, "kind": "pod"}


@pytest.mark.parametrize(("raw", "message"), [
    ({"deployment": "api"}, "missing required parameter namespace for demo: add namespace=..."),
    ({"namespace": "p", "deployment": "a", "colour": "x"}, "unknown parameter colour for demo"),
    ({"namespace": "p", "deployment": "a", "replicas": "0"}, "replicas: 0 is below the minimum 1"),
    ({"namespace": "p", "deployment": "a", "replicas": "1e3"}, "replicas: expected a whole number, got '1e3'"),
    ({"namespace": "P!", "deployment": "a"}, "namespace: 'P!' does not match the pattern ^[a-z0-9-]+$"),
    ({"namespace": "p", "deployment": "a", "kind": "vm"}, "kind: must be one of pod, host, got 'vm'"),
    ({"namespace": "p", "deployment": "a", "force": "perhaps"}, "force: expected true or false, got 'perhaps'"),
    ({"namespace": "p", "deployment": "a", "note": "a\nb"}, "note: control character U+000A is not allowed"),
    ({"namespace": "p", "deployment": "a", "note": "x\u2067y"}, "note: bidirectional-text control"),
    ({"namespace": "p", "deployment": "a", "note": "x" * 5000}, "note: value is longer than 4096"),
])
def test_errors_are_single_clear_lines(raw: dict[str, str], message: str) -> None:
    """Each mistake is refused with a message saying what was wrong."""
    with pytest.raises(ParameterError) as err:
        validate_params(RB, raw)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_secret_values_are_never_echoed_in_errors() -> None:
    """A secret that fails its pattern is not repeated in the error."""
    with pytest.raises(ParameterError) as err:
        validate_params(RB, {"namespace": "p", "deployment": "a", "password": "short"})
    assert "short" not in str(err.value)


def test_shell_and_template_syntax_is_just_text() -> None:
    """Without a pattern, shell or Jinja syntax is accepted as plain data (the spine marks it !unsafe)."""
    v = validate_params(RB, {"namespace": "p", "deployment": "a", "note": "{{ lookup('pipe','id') }}; $(id)"})
    assert v["note"] == "{{ lookup('pipe','id') }}; $(id)"


def test_lock_key_and_masking() -> None:
    """The lock template renders from values; masking hides secrets."""
    v = validate_params(RB, {"namespace": "prod", "deployment": "api", "password": "hunter2hunter2"})
    assert lock_key(RB, v) == "k8s/prod/api"
    assert masked(RB, v)["password"] == "********"


def test_parse_assignments() -> None:
    """key=value words split at the first '='; duplicates and bare words are refused."""
    assert parse_assignments(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(ParameterError, match="given twice"):
        parse_assignments(["a=1", "a=2"])
    with pytest.raises(ParameterError, match="expected key=value"):
        parse_assignments(["oops"])
