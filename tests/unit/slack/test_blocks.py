"""Block Kit builders: escaping, masked secrets, buttons only while pending, the typed run modal."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from bot.domain.catalog import parse_runbook
from bot.domain.ids import RunId
from bot.domain.runs import Approval, Run, RunState
from bot.slack import blocks, ids
from tests.support.paths import ROOT

RUNBOOK = parse_runbook({
    "name": "greet", "title": "Greet <b> & co", "playbook": "greet.yml",
    "parameters": {
        "target": {"type": "str", "required": True},
        "token": {"type": "str", "secret": True},
        "count": {"type": "int", "min": 1, "max": 5, "default": 2},
        "tone": {"type": "choice", "choices": ["calm", "loud"], "default": "calm"},
        "loud": {"type": "bool", "default": False},
    },
    "approval": {"required": 2, "approvers": ["group:sre"]},
}, "## Symptoms\nIt is quiet.\n", "greet.md")
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _run(state: RunState = RunState.PENDING_APPROVAL, **kw: object) -> Run:
    base = dict(id=RunId(7), runbook="greet", state=state, params={"target": "<!here>", "token": "hmac:abc"},
                requested_by="alice", reason="", plan={"check_output": ["a -> <b>"]}, plan_hash="f" * 64,
                lock_key=None, approvals_required=2, created_at=NOW, expires_at=NOW + timedelta(minutes=30))
    base.update(kw)
    return Run(**base)  # type: ignore[arg-type]


def test_escape_covers_the_three_control_characters() -> None:
    """&, < and > are escaped, in that order, so entities are not double-escaped wrongly."""
    assert blocks.esc("<@U1> & <!channel>") == "&lt;@U1&gt; &amp; &lt;!channel&gt;"


def test_card_masks_secrets_and_escapes_values() -> None:
    """The card shows secret parameters masked and user values escaped."""
    text = json.dumps(blocks.approval_card(_run(), RUNBOOK).blocks, ensure_ascii=False)
    assert "token=••••••" in text and "hmac:abc" not in text
    assert "&lt;!here&gt;" in text and "<!here>" not in text
    assert "a -&gt; &lt;b&gt;" in text


def test_pending_card_has_both_buttons_with_the_run_id() -> None:
    """While pending, the card carries runbook_approve / runbook_deny buttons whose value is the run id."""
    card = blocks.approval_card(_run(), RUNBOOK)
    actions = next(b for b in card.blocks if b["type"] == "actions")["elements"]
    assert [(a["action_id"], a["value"]) for a in actions] == [(ids.ACTION_APPROVE, "7"), (ids.ACTION_DENY, "7")]
    assert "0 of 2 approvals" in json.dumps(card.blocks)


def test_quorum_progress_names_approvers() -> None:
    """One approval of two shows who approved, through the mention function."""
    run = _run(approvals=(Approval("bob", "approve", "", NOW),))
    text = json.dumps(blocks.approval_card(run, RUNBOOK, lambda n: f"<@U-{n}>").blocks)
    assert "1 of 2 approvals: <@U-bob>" in text


def test_decided_card_has_no_buttons() -> None:
    """After the decision the buttons are replaced by who decided."""
    run = _run(RunState.DENIED, approvals=(Approval("carol", "deny", "no", NOW),))
    card = blocks.approval_card(run, RUNBOOK)
    assert not [b for b in card.blocks if b["type"] == "actions"]
    assert "Denied by carol" in json.dumps(card.blocks)


def test_expired_card_says_expired() -> None:
    """An expired request's card says expired and has no buttons."""
    card = blocks.approval_card(_run(RunState.EXPIRED, finished_at=NOW), RUNBOOK)
    assert "Expired at" in json.dumps(card.blocks) and ids.ACTION_APPROVE not in json.dumps(card.blocks)


def test_long_result_is_cut_with_a_pointer() -> None:
    """A summary longer than a section is cut, points at `runbook-bot status`, and returns the full text."""
    run = _run(RunState.SUCCEEDED, summary=[f"line {i} " + "x" * 80 for i in range(100)],
               started_at=NOW, finished_at=NOW + timedelta(seconds=5))
    msg, overflow = blocks.result_message(run)
    assert overflow is not None and "line 99 " in overflow
    assert "runbook-bot status 7" in json.dumps(msg.blocks)
    assert all(len(b["text"]["text"]) <= 3000 for b in msg.blocks if b["type"] == "section")


def test_modal_inputs_are_typed_and_secrets_not_prefilled() -> None:
    """The modal has a typed input per parameter; a secret given on the command line is not sent back."""
    view = blocks.run_modal(RUNBOOK, {"target": "web", "token": "s3cret"}, {"runbook": "greet"})
    elements = {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}
    assert elements["param__count"]["element"]["type"] == "number_input"
    assert elements["param__count"]["element"]["min_value"] == "1"
    assert elements["param__tone"]["element"]["initial_option"]["value"] == "calm"
    assert elements["param__loud"]["element"]["type"] == "static_select"
    assert elements["param__target"]["element"]["initial_value"] == "web"
    assert elements["param__target"]["optional"] is False
    assert "s3cret" not in json.dumps(view)
    assert view["callback_id"] == ids.VIEW_RUN


def test_modal_values_round_trip() -> None:
    """Submitted values come back as text per parameter; empty inputs are left out; the reason is separate."""
    view = {"state": {"values": {
        "param__target": {"value": {"type": "plain_text_input", "value": "web"}},
        "param__count": {"value": {"type": "number_input", "value": "3"}},
        "param__tone": {"value": {"type": "static_select", "selected_option": {"value": "loud"}}},
        "param__token": {"value": {"type": "plain_text_input", "value": None}},
        "param___reason": {"value": {"type": "plain_text_input", "value": "because"}},
    }}}
    assert blocks.modal_values(view) == ({"target": "web", "count": "3", "tone": "loud"}, "because")


def test_card_carries_the_runbooks_warning() -> None:
    """A runbook's warning (the heap snapshot freezes the process) is shown to approvers on the card."""
    from bot.catalog_files import load_runbook

    root = ROOT
    heap = load_runbook(root / "runbooks" / "heap-snapshot.md", root / "playbooks")
    assert "FROZEN" in heap.warning
    texts = [b["text"]["text"] for b in blocks.approval_card(_run(runbook="heap-snapshot"), heap).blocks
             if b.get("type") == "section" and "text" in b]
    assert any(t.startswith(":warning: The Node.js process is FROZEN") for t in texts)
