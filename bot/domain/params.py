"""Parameter validation: raw `key=value` text in, typed values out, or one ParameterError line.

Values are data, never code: the spine hands them to Ansible as `!unsafe` extra vars. On top of each
runbook's own pattern, every text value is refused when it carries control characters (newlines, NUL,
escape sequences) or Unicode bidirectional controls that make text display differently from what runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bot.domain.catalog import Parameter, Runbook
from bot.domain.text import BIDI_CONTROLS, forbidden
from bot.errors import ParameterError

MAX_VALUE_LENGTH = 4096
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _check_text(param: Parameter, value: str) -> None:
    if len(value) > MAX_VALUE_LENGTH:
        raise ParameterError(f"{param.name}: value is longer than {MAX_VALUE_LENGTH} characters")
    for ch in value:
        if ch in BIDI_CONTROLS:
            raise ParameterError(f"{param.name}: bidirectional-text control characters are not allowed")
        if forbidden(ch):
            raise ParameterError(
                f"{param.name}: control character U+{ord(ch):04X} is not allowed (newlines, tabs, escapes)"
            )


def _show(param: Parameter, value: object) -> str:
    return "the given value" if param.secret else repr(value)


def coerce(param: Parameter, value: Any) -> Any:
    """One value of `param` from text (or an already typed default); raises ParameterError."""
    if param.type == "int":
        if isinstance(value, bool):
            raise ParameterError(f"{param.name}: expected a whole number, got {value!r}")
        if isinstance(value, int):
            number = value
        else:
            text = str(value).strip()
            if not re.fullmatch(r"[+-]?\d{1,18}", text):
                raise ParameterError(f"{param.name}: expected a whole number, got {_show(param, value)}")
            number = int(text)
        if param.min is not None and number < param.min:
            raise ParameterError(f"{param.name}: {number} is below the minimum {param.min}")
        if param.max is not None and number > param.max:
            raise ParameterError(f"{param.name}: {number} is above the maximum {param.max}")
        return number
    if param.type == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ParameterError(f"{param.name}: expected true or false, got {_show(param, value)}")
    text = value if isinstance(value, str) else str(value)
    _check_text(param, text)
    if param.type == "choice":
        if text not in param.choices:
            raise ParameterError(f"{param.name}: must be one of {', '.join(param.choices)}, got {text!r}")
        return text
    if param.pattern is not None and not param.pattern.fullmatch(text):
        shown = _show(param, text)
        raise ParameterError(f"{param.name}: {shown} does not match the pattern {param.pattern.pattern}")
    return text


def validate_params(runbook: Runbook, raw: Mapping[str, Any]) -> dict[str, Any]:
    """All parameters of `runbook` from `raw`: unknown names, missing required ones, bad values refused."""
    known = {p.name for p in runbook.parameters}
    unknown = sorted(set(raw) - known)
    if unknown:
        hint = f" (known: {', '.join(sorted(known))})" if known else " (this runbook takes no parameters)"
        raise ParameterError(f"unknown parameter {', '.join(unknown)} for {runbook.name}{hint}")
    values: dict[str, Any] = {}
    missing = []
    for p in runbook.parameters:
        if p.name in raw:
            values[p.name] = coerce(p, raw[p.name])
        elif p.default is not None:
            values[p.name] = p.default
        elif p.required:
            missing.append(p.name)
    if missing:
        raise ParameterError(
            f"missing required parameter {', '.join(missing)} for {runbook.name}: "
            f"add {' '.join(m + '=...' for m in missing)}"
        )
    return values


def parse_assignments(args: list[str]) -> dict[str, str]:
    """`key=value` words (as typed in a terminal or Slack) into a dict; the first '=' splits."""
    out: dict[str, str] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise ParameterError(f"expected key=value, got {arg!r}")
        if key in out:
            raise ParameterError(f"parameter {key} given twice")
        out[key] = value
    return out


def lock_key(runbook: Runbook, values: Mapping[str, Any]) -> str | None:
    """The rendered lock key for these (validated) values, or None when the runbook has no lock."""
    if runbook.lock is None:
        return None
    return runbook.lock.format_map({k: str(v) for k, v in values.items()})


def masked(runbook: Runbook, values: Mapping[str, Any], mask: str = "********") -> dict[str, Any]:
    """`values` with secret parameters replaced by `mask` (for display)."""
    secrets = runbook.secret_names
    return {k: (mask if k in secrets else v) for k, v in values.items()}
