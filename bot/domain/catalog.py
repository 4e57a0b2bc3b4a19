"""The runbook catalog model: front matter (the contract) parsed and validated into typed objects.

Parsing takes text, never paths: reading files is the loader's job (bot.catalog_files).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.domain.durations import parse_duration
from bot.domain.patterns import resolve as resolve_pattern
from bot.errors import CatalogError, UnknownRunbook

ParamType = Literal["str", "int", "bool", "choice"]
_PARAM_TYPES: tuple[ParamType, ...] = ("str", "int", "bool", "choice")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_PARAM_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
# Names Ansible or the spine reserve: a parameter may not shadow them.
_RESERVED_PARAMS = frozenset({"runbook_run_id", "runbook_name", "ansible_check_mode", "hostvars", "vars"})

_TOP_KEYS = frozenset({
    "name", "title", "playbook", "summary", "parameters", "approval", "lock", "timeout",
    "idle_timeout", "check_mode", "warning", "schedule", "tags", "drill",
})
_PARAM_KEYS = frozenset({
    "type", "required", "default", "pattern", "min", "max", "choices", "secret", "description", "example",
})
_APPROVAL_KEYS = frozenset({"required", "approvers", "requesters", "allow_self", "ttl", "scheduled"})
_DEFAULT_TTL = 30 * 60
_DEFAULT_TIMEOUT = 30 * 60


@dataclass(frozen=True)
class Parameter:
    name: str
    type: ParamType = "str"
    required: bool = False
    default: Any = None
    pattern: re.Pattern[str] | None = None
    min: int | None = None
    max: int | None = None
    choices: tuple[str, ...] = ()
    secret: bool = False
    description: str = ""
    example: str | None = None


@dataclass(frozen=True)
class ApprovalPolicy:
    required: int = 1
    approvers: tuple[str, ...] = ()
    requesters: tuple[str, ...] = ()
    allow_self: bool = False
    ttl_seconds: int = _DEFAULT_TTL
    scheduled_preapproved: bool = False


@dataclass(frozen=True)
class Runbook:
    name: str
    title: str
    playbook: str
    source: str
    summary: str = ""
    parameters: tuple[Parameter, ...] = ()
    approval: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    lock: str | None = None
    timeout_seconds: int = _DEFAULT_TIMEOUT
    idle_timeout_seconds: int | None = None
    check_mode: bool = False
    warning: str = ""
    schedule: str | None = None
    drill_max_age_seconds: int | None = None  # set: a restore drill whose evidence must stay fresh
    guide: str = ""

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)

    @property
    def secret_names(self) -> frozenset[str]:
        return frozenset(p.name for p in self.parameters if p.secret)

    def guide_sections(self) -> dict[str, str]:
        """The guide text split by `## Heading` (lower-cased heading -> body)."""
        sections: dict[str, str] = {}
        current = "intro"
        for line in self.guide.splitlines():
            if line.startswith("## "):
                current = line[3:].strip().lower()
                sections[current] = ""
            else:
                sections[current] = sections.get(current, "") + line + "\n"
        return {k: v.strip() for k, v in sections.items() if v.strip()}


def split_front_matter(text: str, source: str) -> tuple[str, str]:
    """(front matter YAML, body) of a Markdown runbook file."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise CatalogError(source, "front matter", "the file must start with a '---' line")
    for i in range(1, len(lines)):
        if lines[i].strip() == "---":
            return "".join(lines[1:i]), "".join(lines[i + 1 :])
    raise CatalogError(source, "front matter", "no closing '---' line")


def _expect(cond: bool, source: str, key: str, message: str) -> None:
    if not cond:
        raise CatalogError(source, key, message)


def _unknown_keys(data: Mapping[str, Any], allowed: frozenset[str], source: str, prefix: str) -> None:
    for k in data:
        _expect(k in allowed, source, f"{prefix}{k}", f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _duration(value: Any, source: str, key: str) -> int:
    try:
        return parse_duration(value)
    except ValueError as e:
        raise CatalogError(source, key, str(e)) from None


def _parse_parameter(name: str, spec: Any, source: str) -> Parameter:
    key = f"parameters.{name}"
    _expect(isinstance(spec, dict), source, key, "must be a mapping")
    _expect(bool(_PARAM_NAME_RE.match(name)), source, key, "parameter names are [a-z_][a-z0-9_]*")
    _expect(name not in _RESERVED_PARAMS, source, key, "this name is reserved")
    _unknown_keys(spec, _PARAM_KEYS, source, f"{key}.")
    ptype = spec.get("type", "str")
    _expect(ptype in _PARAM_TYPES, source, f"{key}.type", f"must be one of {', '.join(_PARAM_TYPES)}")
    pattern = None
    if "pattern" in spec:
        _expect(ptype == "str", source, f"{key}.pattern", "only str parameters take a pattern")
        try:
            pattern = re.compile(resolve_pattern(str(spec["pattern"])))
        except KeyError as e:
            raise CatalogError(source, f"{key}.pattern", str(e.args[0])) from None
        except re.error as e:
            raise CatalogError(source, f"{key}.pattern", f"bad regular expression: {e}") from None
    for bound in ("min", "max"):
        if bound in spec:
            _expect(ptype == "int", source, f"{key}.{bound}", "only int parameters take min/max")
            _expect(isinstance(spec[bound], int) and not isinstance(spec[bound], bool),
                    source, f"{key}.{bound}", "must be an integer")
    if "min" in spec and "max" in spec:
        _expect(spec["min"] <= spec["max"], source, f"{key}.min", "min is greater than max")
    choices: tuple[str, ...] = ()
    if ptype == "choice":
        raw = spec.get("choices")
        _expect(isinstance(raw, list) and len(raw) > 0, source, f"{key}.choices", "a choice needs a list")
        choices = tuple(str(c) for c in raw)
    else:
        _expect("choices" not in spec, source, f"{key}.choices", "only choice parameters take choices")
    for flag in ("required", "secret"):
        _expect(isinstance(spec.get(flag, False), bool), source, f"{key}.{flag}", "must be true or false")
    param = Parameter(
        name=name, type=ptype, required=spec.get("required", False), pattern=pattern,
        min=spec.get("min"), max=spec.get("max"), choices=choices, secret=spec.get("secret", False),
        description=str(spec.get("description", "")),
        example=str(spec["example"]) if "example" in spec else None,
    )
    if "default" in spec and spec["default"] is not None:
        from bot.domain.params import coerce  # local: params imports this module

        try:
            default = coerce(param, spec["default"] if ptype != "str" else str(spec["default"]))
        except Exception as e:  # noqa: BLE001 - reported as the catalog error it is
            raise CatalogError(source, f"{key}.default", str(e)) from None
        _expect(not param.required, source, f"{key}.default", "a required parameter has no default")
        param = Parameter(**{**param.__dict__, "default": default})
    return param


def _parse_approval(data: Any, source: str) -> ApprovalPolicy:
    if data is None:
        return ApprovalPolicy()
    _expect(isinstance(data, dict), source, "approval", "must be a mapping")
    _unknown_keys(data, _APPROVAL_KEYS, source, "approval.")
    required = data.get("required", 1)
    _expect(isinstance(required, int) and not isinstance(required, bool) and required >= 0,
            source, "approval.required", "must be a whole number >= 0")
    approvers = data.get("approvers", [])
    requesters = data.get("requesters", [])
    for k, v in (("approvers", approvers), ("requesters", requesters)):
        _expect(isinstance(v, list) and all(isinstance(x, str) and x for x in v),
                source, f"approval.{k}", "must be a list of group:NAME or operator names")
    _expect(required == 0 or len(approvers) > 0, source, "approval.approvers",
            "approval.required > 0 needs at least one approver")
    scheduled = data.get("scheduled")
    _expect(scheduled in (None, "preapproved"), source, "approval.scheduled", "only 'preapproved' is allowed")
    allow_self = data.get("allow_self", False)
    _expect(isinstance(allow_self, bool), source, "approval.allow_self", "must be true or false")
    return ApprovalPolicy(
        required=required, approvers=tuple(approvers), requesters=tuple(requesters), allow_self=allow_self,
        ttl_seconds=_duration(data.get("ttl", _DEFAULT_TTL), source, "approval.ttl"),
        scheduled_preapproved=scheduled == "preapproved",
    )


def template_fields(template: str) -> list[str]:
    """The {field} names a lock template uses."""
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def parse_runbook(data: Any, guide: str, source: str, expected_name: str | None = None) -> Runbook:
    """Validate parsed front matter into a Runbook, or raise CatalogError naming the key."""
    _expect(isinstance(data, dict), source, "front matter", "must be a YAML mapping")
    _unknown_keys(data, _TOP_KEYS, source, "")
    for required in ("name", "title", "playbook"):
        _expect(isinstance(data.get(required), str) and bool(data[required].strip()),
                source, required, "is required (a non-empty string)")
    name = data["name"]
    _expect(bool(_NAME_RE.match(name)), source, "name", "use lower-case letters, digits and dashes")
    if expected_name is not None:
        _expect(name == expected_name, source, "name", f"must equal the file name {expected_name!r}")
    raw_params = data.get("parameters") or {}
    _expect(isinstance(raw_params, dict), source, "parameters", "must be a mapping of name -> spec")
    params = tuple(_parse_parameter(str(n), s, source) for n, s in raw_params.items())
    names = {p.name for p in params}
    lock = data.get("lock")
    if lock is not None:
        _expect(isinstance(lock, str) and bool(lock), source, "lock", "must be a template string")
        try:
            fields = template_fields(lock)
        except ValueError as e:
            raise CatalogError(source, "lock", f"bad template: {e}") from None
        for f in fields:
            _expect(f in names, source, "lock", f"names unknown parameter {{{f}}}")
            param = next(p for p in params if p.name == f)
            _expect(not param.secret, source, "lock", f"must not use secret parameter {{{f}}}")
            _expect(param.required or param.default is not None, source, "lock",
                    f"uses {{{f}}}, which may be absent: make it required or give it a default")
    approval = _parse_approval(data.get("approval"), source)
    schedule = data.get("schedule")
    if schedule is not None:
        _expect(isinstance(schedule, str) and len(schedule.split()) == 5, source, "schedule",
                "must be a 5-field cron expression, e.g. '0 4 * * 1'")
        _expect(approval.required == 0 or approval.scheduled_preapproved, source, "approval.scheduled",
                "a scheduled runbook needs approval.scheduled: preapproved (or approval.required: 0)")
        for p in params:
            _expect(not p.required or p.default is not None, source, f"parameters.{p.name}",
                    "a scheduled runbook needs a default for every required parameter")
    drill = data.get("drill")
    drill_max_age = None
    if drill is not None:
        _expect(isinstance(drill, dict) and set(drill) <= {"max_age"}, source, "drill",
                "must be a mapping with max_age (e.g. {max_age: 8d})")
        drill_max_age = _duration(drill.get("max_age", "8d"), source, "drill.max_age")
    check_mode = data.get("check_mode", False)
    _expect(isinstance(check_mode, bool), source, "check_mode", "must be true or false")
    return Runbook(
        name=name, title=data["title"].strip(), playbook=data["playbook"], source=source,
        summary=str(data.get("summary", "")).strip(), parameters=params, approval=approval, lock=lock,
        timeout_seconds=_duration(data.get("timeout", _DEFAULT_TIMEOUT), source, "timeout"),
        idle_timeout_seconds=(
            _duration(data["idle_timeout"], source, "idle_timeout") if "idle_timeout" in data else None
        ),
        check_mode=check_mode, warning=str(data.get("warning", "")).strip(), schedule=schedule,
        drill_max_age_seconds=drill_max_age, guide=guide.strip(),
    )


class Catalog:
    """The loaded runbooks, by name."""

    def __init__(self, runbooks: Iterable[Runbook]) -> None:
        self._by_name: dict[str, Runbook] = {}
        for rb in runbooks:
            if rb.name in self._by_name:
                raise CatalogError(rb.source, "name", f"duplicate of {self._by_name[rb.name].source}")
            self._by_name[rb.name] = rb

    def get(self, name: str) -> Runbook:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownRunbook(name, self.names()) from None

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __iter__(self) -> Any:
        return iter(self._by_name[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._by_name)
