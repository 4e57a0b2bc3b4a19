"""Plan hashes, canonical JSON, redaction, durations and the run state machine."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.domain.durations import format_duration, parse_duration
from bot.domain.plan import Plan, canonical_json, protected_params, secret_digest
from bot.domain.runs import RunState, can_transition
from bot.execution.redaction import MASK, Redactor
from bot.execution.runner import write_extravars


def test_plan_hash_binds_every_part() -> None:
    """Changing parameters, playbook content or check output changes the hash and is named."""
    base = Plan("r", {"a": 1}, "p" * 64, ["x 1 -> 2"])
    assert base.hash == Plan("r", {"a": 1}, "p" * 64, ["x 1 -> 2"]).hash
    changed = Plan("r", {"a": 1}, "q" * 64, ["x 1 -> 3"])
    assert base.hash != changed.hash
    assert base.differences(changed)[0].startswith("playbook content")
    assert "check-mode output" in base.differences(changed)[1]


def test_secret_values_are_hmacs_in_plans() -> None:
    """Secrets enter plans as keyed digests: equal values match, the value itself is absent."""
    p = protected_params({"pw": "hunter2", "n": "ns"}, frozenset({"pw"}), b"k" * 32)
    assert p["pw"] == secret_digest(b"k" * 32, "pw", "hunter2")
    assert "hunter2" not in canonical_json(p)
    assert p["pw"] != secret_digest(b"j" * 32, "pw", "hunter2")


def test_canonical_json_is_order_independent() -> None:
    """Key order does not change the canonical form."""
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == canonical_json({"a": [1, {"c": 3, "d": 2}], "b": 1})


def test_redactor_masks_values_escapes_and_nested_data() -> None:
    """Secrets are masked in text, JSON-escaped text and nested structures."""
    r = Redactor(['pa"ss', "tok"])
    assert r.text('x pa"ss y') == f"x {MASK} y"
    assert r.text('{"v": "pa\\"ss"}') == f'{{"v": "{MASK}"}}'
    event = {"event_data": {"res": {"msg": ["tok", {"k": "tok!"}]}}}
    r.in_place(event)
    assert event == {"event_data": {"res": {"msg": [MASK, {"k": MASK + "!"}]}}}
    assert not Redactor([])


def test_extravars_are_written_unsafe(tmp_path: object) -> None:
    """Every string extra var is tagged !unsafe so Ansible never templates it."""
    from pathlib import Path

    path = Path(str(tmp_path)) / "extravars"
    write_extravars(path, {"cmd": "{{ lookup('pipe','id') }}", "n": 3, "ok": True})
    text = path.read_text()
    assert "cmd: !unsafe '{{ lookup(''pipe'',''id'') }}'" in text
    assert "n: 3" in text and "ok: true" in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize(("text", "seconds"),
                         [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), (45, 45)])
def test_durations(text: object, seconds: int) -> None:
    """Durations accept plain seconds and s/m/h/d suffixes."""
    assert parse_duration(text) == seconds


def test_bad_durations_and_formatting() -> None:
    """Nonsense durations are refused; formatting is short."""
    for bad in ("soon", "-5m", 0, True, "5 minutes"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert format_duration(4.24) == "4.2s"
    assert format_duration(185) == "3m05s"
    assert format_duration(7800) == "2h10m"


def test_state_machine() -> None:
    """Only the documented transitions are allowed; final states are final."""
    assert can_transition(RunState.PENDING_APPROVAL, RunState.EXPIRED)
    assert can_transition(RunState.RUNNING, RunState.INTERRUPTED)
    assert not can_transition(RunState.QUEUED, RunState.SUCCEEDED)
    assert not can_transition(RunState.DENIED, RunState.QUEUED)
    assert all(s.terminal for s in (RunState.SUCCEEDED, RunState.EXPIRED, RunState.INTERRUPTED))


def test_latest_fire_time_is_the_cron_slot() -> None:
    """A scheduled fire is keyed by the cron slot it belongs to, not the moment the job ran."""
    from bot.scheduler import latest_fire_time

    now = datetime(2026, 11, 23, 4, 0, 7, 123000, tzinfo=UTC)  # a Monday, 7 s after 04:00
    assert latest_fire_time("0 4 * * 1", now) == datetime(2026, 11, 23, 4, 0, tzinfo=UTC)
