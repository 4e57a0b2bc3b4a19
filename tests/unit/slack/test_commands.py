"""Parsing of /runbook text: key=value pairs, quoting (including Slack's smart quotes)."""

from __future__ import annotations

import pytest

from bot.domain.params import parse_assignments
from bot.errors import ParameterError
from bot.slack.listeners.commands.runbook import _split


def test_quoted_values_keep_their_spaces() -> None:
    """Quoted values (straight or smart quotes, as Slack clients type them) stay one value."""
    assert parse_assignments(_split('run x message="hello world" n=2')[2:]) == {"message": "hello world", "n": "2"}
    assert parse_assignments(_split("a=\u201cone two\u201d")) == {"a": "one two"}


def test_value_may_contain_equals_signs() -> None:
    """Only the first = separates key from value."""
    assert parse_assignments(["q=a=b"]) == {"q": "a=b"}


def test_word_without_equals_is_refused() -> None:
    """A bare word is a ParameterError naming it."""
    with pytest.raises(ParameterError, match="expected key=value"):
        parse_assignments(["oops"])


def test_unbalanced_quotes_fall_back_to_words() -> None:
    """An unbalanced quote does not crash the command: the text is split on spaces."""
    assert _split('run x message="oops') == ["run", "x", 'message="oops']
