"""Free text (reason, comment, parameter values) is refused when it could pass for the bot's own fields,
and shown inert (one line, visible escapes, no mrkdwn) when an old row carries it anyway."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.catalog import parse_runbook
from bot.domain.ids import RunId, parse_run_id
from bot.domain.policy import Operator, check_quorum_reachable, eligible_approvers
from bot.domain.runs import Approval, Run, RunState
from bot.domain.text import check_free_text, visible
from bot.errors import ParameterError, QuorumUnreachable
from bot.slack import blocks
from bot.testing import directory
from bot.text_views import approval_status, params_text, run_text, runbook_text

FORGED = "INC-1\n*Status:* :white_check_mark: approved, queued"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
RUNBOOK = parse_runbook({
    "name": "greet", "title": "Greet", "playbook": "greet.yml",
    "parameters": {"target": {"type": "str"}, "token": {"type": "str", "secret": True}},
    "approval": {"required": 2, "approvers": ["group:sre"]},
}, "", "greet.md")


def _status_lines(blocks_: list[dict[str, object]]) -> int:
    """How many lines of the card's mrkdwn start with the bot's own `*Status:*` field."""
    texts = [str(b["text"]["text"]) for b in blocks_ if isinstance(b.get("text"), dict)]  # type: ignore[index]
    return sum(1 for t in texts for line in t.split("\n") if line.startswith("*Status:*"))


def _run(state: RunState = RunState.PENDING_APPROVAL, **kw: object) -> Run:
    base = dict(id=RunId(7), runbook="greet", state=state,
                params={"target": "api", "token": "hmac-sha256:" + "ab" * 16},
                requested_by="alice", reason="", plan={}, plan_hash="f" * 64, lock_key=None,
                approvals_required=2, created_at=NOW, expires_at=NOW + timedelta(minutes=30))
    base.update(kw)
    return Run(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [
    "two\nlines", "carriage\rreturn", "tab\there", "\x1b[8mhidden", "nul\x00", "c1\x9b31m",
    "rtl\u202eevil", "isolate\u2066x", "line\u2028sep", "para\u2029sep",
])
def test_free_text_with_control_characters_is_refused(bad: str) -> None:
    """A reason or comment with a control, escape, bidi or line-separator character is one ParameterError."""
    with pytest.raises(ParameterError) as e:
        check_free_text("reason", bad)
    assert str(e.value).startswith("reason: U+") and "\n" not in str(e.value)


def test_ordinary_free_text_is_kept() -> None:
    """Punctuation, mrkdwn-looking text and non-Latin letters are fine on the way in (they are shown inert)."""
    text = "INC-42: *api* is down <!channel> — Größe 日本 👍"
    assert check_free_text("comment", text) == text


def test_visible_turns_controls_into_escapes_on_one_line() -> None:
    """Stored text with controls is shown with repr-like escapes, never as the characters themselves."""
    assert visible("a\nb\x1b[2Jc\u202ed\te") == "a\\nb\\x1b[2Jc\\u202ed\\te"


def test_status_text_of_a_forged_reason_has_no_forged_line() -> None:
    """A stored reason with a newline and fake fields stays on the reason line in `runbook-bot status`."""
    lines = run_text(_run(reason=FORGED + "\n  approvals: approved by boss\n  plan hash: 000000000000"))
    assert sum(1 for ln in lines if ln.lstrip().startswith("approvals:")) == 1
    assert sum(1 for ln in lines if ln.lstrip().startswith("plan hash:")) == 1
    reason = next(ln for ln in lines if ln.lstrip().startswith("reason:"))
    assert reason.startswith('  reason: "INC-1\\n*Status:*')


def test_terminal_escape_in_a_stored_value_is_visible() -> None:
    """An ESC sequence in a parameter value or comment cannot hide text on a terminal."""
    run = _run(RunState.DENIED, params={"target": "a\x1b[8m"},
               approvals=(Approval("bob", "deny", "no\x1b[8msecret", NOW),))
    text = "\n".join(run_text(run))
    assert "\x1b" not in text
    assert "target=a\\x1b[8m" in text and "\\x1b[8msecret" in text


def test_card_reason_is_one_inert_code_span() -> None:
    """The card's reason cannot add a *Status:* line, be formatted, or mention a channel."""
    card = blocks.approval_card(_run(reason=FORGED + " <!channel> `x` *b*"), RUNBOOK)
    text = json.dumps(card.blocks, ensure_ascii=False)
    section = next(b["text"]["text"] for b in card.blocks if "*Reason:*" in b.get("text", {}).get("text", ""))
    reason = section.split("*Reason:* ", 1)[1]
    assert "\n" not in reason
    assert reason.startswith("`") and reason.endswith("`") and reason.count("`") == 2
    assert "&lt;!channel&gt;" in reason and "<!channel>" not in text
    assert _status_lines(card.blocks) == 1


def test_deny_comment_on_the_card_is_inert() -> None:
    """A denial's comment is shown escaped in a code span on the decision line."""
    run = _run(RunState.DENIED, approvals=(Approval("bob", "deny", "ok\n*Status:* approved <!here>", NOW),))
    card = blocks.approval_card(run, RUNBOOK)
    text = json.dumps(card.blocks, ensure_ascii=False)
    assert _status_lines(card.blocks) == 1
    assert "`ok\\\\n*Status:* approved &lt;!here&gt;`" in text


def test_parameter_value_cannot_close_the_code_block() -> None:
    """A stored value with ``` and a newline stays inside the card's parameter block."""
    card = blocks.approval_card(_run(params={"target": "x```\n*Status:* approved"}), None)
    params = next(b["text"]["text"] for b in card.blocks if "*Parameters:*" in b.get("text", {}).get("text", ""))
    assert params.count("```") == 2 and params.endswith("```")


def test_status_reply_and_cli_text_mask_secret_hmacs() -> None:
    """`/runbook status` and `runbook-bot status`/`runs` show a mask, never a secret's stored HMAC."""
    run = _run()
    slack = json.dumps(blocks.status_reply(run).blocks, ensure_ascii=False)
    assert "hmac-sha256" not in slack and "token=••••••" in slack
    assert "hmac-sha256" not in "\n".join(run_text(run))
    assert params_text(run.params) == "target=api token=••••••"


def test_denied_run_says_who_denied() -> None:
    """The approvals line of a denied run names the denier and the comment, not 'no approval required'."""
    run = _run(RunState.DENIED, approvals=(Approval("carol", "approve", "", NOW), Approval("bob", "deny", "no", NOW)))
    assert approval_status(run) == 'denied by bob ("no"); 1 of 2 approvals: carol'


def test_cancelled_run_says_who_cancelled() -> None:
    """The approvals line of a cancelled run says who cancelled it."""
    assert approval_status(_run(RunState.CANCELLED, cancelled_by="alice")) == "0 of 2 approvals; cancelled by alice"
    card = json.dumps(blocks.approval_card(_run(RunState.CANCELLED, cancelled_by="alice"), RUNBOOK).blocks)
    assert "Cancelled by alice at" in card


def test_runbook_without_approval_says_none_required() -> None:
    """`show` of a runbook with approval.required 0 says 'none required', not '0 of nobody'."""
    rb = parse_runbook({"name": "look", "title": "Look", "playbook": "l.yml", "approval": {"required": 0}}, "", "l.md")
    line = next(ln for ln in runbook_text(rb) if "approval:" in ln)
    assert "none required" in line and "nobody" not in line


@pytest.mark.parametrize(("text", "expected"), [("12", 12), ("#12", 12), (" 7 ", 7), ("²", None), ("١٢", None),
                                                ("-1", None), ("", None), ("1" * 19, None)])
def test_run_ids_are_ascii_digits(text: str, expected: int | None) -> None:
    """Only ASCII digits make a run id: '²' passes str.isdigit() but is not one."""
    assert parse_run_id(text) == expected


DIR = directory({"operators": {"me": {}, "other": {}}, "groups": {"sre": ["me", "other"]}})
TWO = parse_runbook({"name": "two", "title": "Two", "playbook": "t.yml",
                     "approval": {"required": 2, "approvers": ["group:sre"]}}, "", "t.md")


def test_a_request_that_can_never_be_approved_is_refused() -> None:
    """Two approvals from a group of the requester plus one colleague can never happen: say so at once."""
    assert eligible_approvers(DIR, TWO, Operator("me")) == frozenset({"other"})  # type: ignore[arg-type]
    with pytest.raises(QuorumUnreachable) as e:
        check_quorum_reachable(DIR, TWO, Operator("me"))  # type: ignore[arg-type]
    assert "needs 2 approvals" in str(e.value) and "only 1 operator(s) other than you" in str(e.value)


def test_reachable_quorum_and_slack_groups_pass() -> None:
    """Enough approvers, or a Slack user group (counted by Slack only), raise nothing."""
    check_quorum_reachable(DIR, TWO, Operator("nobody-in-sre"))  # type: ignore[arg-type]
    slack = directory({"operators": {"me": {}}, "groups": {"sre": ["me", "slack-group:S1"]}})
    check_quorum_reachable(slack, TWO, Operator("me"))  # type: ignore[arg-type]
