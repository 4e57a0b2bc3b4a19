"""Redaction of secrets in text and nested data."""

from __future__ import annotations

from bot.execution.redaction import MASK, Redactor


def test_redactor_masks_values_escapes_and_nested_data() -> None:
    """Secrets are masked in text, JSON-escaped text and nested structures."""
    r = Redactor(['pa"ss', "tok"])
    assert r.text('x pa"ss y') == f"x {MASK} y"
    assert r.text('{"v": "pa\\"ss"}') == f'{{"v": "{MASK}"}}'
    event = {"event_data": {"res": {"msg": ["tok", {"k": "tok!"}]}}}
    r.in_place(event)
    assert event == {"event_data": {"res": {"msg": [MASK, {"k": MASK + "!"}]}}}
    assert not Redactor([])
