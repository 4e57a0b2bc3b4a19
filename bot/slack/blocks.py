"""Block Kit builders: pure functions from domain objects to Slack JSON (the only place Slack JSON exists).

Every piece of user- or playbook-supplied text goes through `esc` (Slack's mrkdwn escaping of &, <, >), so
a parameter value or a task name can never become a mention, a link or a broadcast. Free text a person
typed (reason, comment) goes through `inert`: one line (control characters as visible escapes), inside an
inline code span with its backticks replaced, so it can neither be formatted (*bold*, _italic_, ~strike~)
nor break out into a forged `*Status:*` line. Code blocks (`_code`) neutralise backticks and control
characters the same way, so no stored value can close the block. Secret parameter values are never shown:
the card prints a mask in their place (also for a stored HMAC).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.domain.catalog import Parameter, Runbook
from bot.domain.durations import format_duration
from bot.domain.runs import Run, RunState
from bot.domain.text import visible
from bot.slack import ids
from bot.text_views import SECRET_MASK, approval_status, run_text, runbook_text, shown_value

Block = dict[str, Any]
_BACKTICK_STANDIN = "\u02cb"  # MODIFIER LETTER GRAVE ACCENT: looks like ` but opens and closes no code
# Slack's limits: a section's text is at most 3000 characters; a message about 40k; we stay well under.
SECTION_LIMIT = 2900
PROGRESS_LINES = 12

MentionFn = Callable[[str], str]


def esc(text: object) -> str:
    """Escape text for mrkdwn / plain text the way Slack asks: &, < and > only."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def inert(text: object) -> str:
    """Free text as inert mrkdwn: one line, escaped, in a code span nothing inside can close."""
    body = visible(text).replace("`", _BACKTICK_STANDIN)
    return f"`{esc(body)}`" if body else "` `"


def _code_line(line: object) -> str:
    """A line inside a ``` block: lines kept, other control characters visible, no backtick to close it."""
    return "\n".join(visible(part) for part in str(line).split("\n")).replace("`", _BACKTICK_STANDIN)


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text[:150] or " ", "emoji": True}


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:SECTION_LIMIT] or " "}}


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:SECTION_LIMIT] or " "}]}


def _code(lines: Iterable[str], limit: int = SECTION_LIMIT - 8) -> str:
    body = "\n".join(esc(_code_line(line)) for line in lines)
    if len(body) > limit:
        body = body[: limit - 2] + "\n…"
    return f"```{body}```"


def _when(dt: datetime | None) -> str:
    if dt is None:
        return "-"
    fallback = f"{dt:%Y-%m-%d %H:%M:%S %Z}"
    return f"<!date^{int(dt.timestamp())}^{{date_short_pretty}} {{time_secs}}|{esc(fallback)}>"


def _plain_mention(name: str) -> str:
    return esc(name)


def masked_params(run_params: Mapping[str, Any], runbook: Runbook | None) -> list[str]:
    """`name=value` per parameter, secret values masked (the stored value is an HMAC; show neither)."""
    secret = runbook.secret_names if runbook is not None else frozenset()
    return [f"{k}={SECRET_MASK if k in secret else shown_value(v)}" for k, v in run_params.items()]


@dataclass(frozen=True)
class Message:
    text: str  # the notification / fallback text
    blocks: list[Block]


# ----------------------------------------------------------------------------- approval card
_STATE_LABEL = {
    RunState.PENDING_APPROVAL: ":hourglass_flowing_sand: waiting for approval",
    RunState.QUEUED: ":white_check_mark: approved, queued",
    RunState.RUNNING: ":arrow_forward: running",
    RunState.SUCCEEDED: ":large_green_circle: succeeded",
    RunState.FAILED: ":red_circle: failed",
    RunState.TIMED_OUT: ":alarm_clock: timed out",
    RunState.CANCELLED: ":no_entry_sign: cancelled",
    RunState.INTERRUPTED: ":warning: interrupted",
    RunState.DENIED: ":x: denied",
    RunState.EXPIRED: ":hourglass: expired",
}


def approval_card(run: Run, runbook: Runbook | None, mention: MentionFn = _plain_mention) -> Message:
    """The approval card: what will run, with which parameters, the plan and its hash, quorum and buttons."""
    title = runbook.title if runbook is not None else run.runbook
    blocks: list[Block] = [
        {"type": "header", "text": _plain(f"Run {run.id}: {title}")},
        _section(
            f"*Runbook:* `{esc(run.runbook)}`   *Requested by:* {mention(run.requested_by)}"
            + (f"\n*Reason:* {inert(run.reason)}" if run.reason else "")
        ),
        _section("*Parameters:*\n" + _code(masked_params(run.params, runbook) or ["(none)"])),
    ]
    if runbook is not None and runbook.warning:
        blocks.append(_section(f":warning: {esc(runbook.warning)}"))
    plan = run.plan.get("check_output")
    if plan:
        blocks.append(_section("*Plan (check mode):*\n" + _code(str(x) for x in plan)))
    details = f"plan hash `{esc(run.plan_hash[:12])}`"
    if run.lock_key:
        details += f" · lock {inert(run.lock_key)}"
    if run.state is RunState.PENDING_APPROVAL:
        details += f" · expires {_when(run.expires_at)}"
    blocks.append(_context(details))
    blocks.append(_section(f"*Status:* {_STATE_LABEL[run.state]}\n{_decision_line(run, mention)}"))
    if run.state is RunState.PENDING_APPROVAL:
        blocks.append({
            "type": "actions", "block_id": f"decide-{run.id}",
            "elements": [
                {"type": "button", "action_id": ids.ACTION_APPROVE, "style": "primary",
                 "text": _plain("Approve"), "value": str(run.id)},
                {"type": "button", "action_id": ids.ACTION_DENY, "style": "danger",
                 "text": _plain("Deny"), "value": str(run.id)},
            ],
        })
    text = f"Run {run.id} ({run.runbook}) requested by {run.requested_by}: {run.state.value}"
    return Message(esc(text), blocks)


def _decision_line(run: Run, mention: MentionFn) -> str:
    approvals = [a for a in run.approvals if a.decision == "approve"]
    denials = [a for a in run.approvals if a.decision == "deny"]
    if run.state is RunState.PENDING_APPROVAL:
        who = ", ".join(mention(a.approver) for a in approvals)
        return f"{len(approvals)} of {run.approvals_required} approvals" + (f": {who}" if who else "")
    if run.state is RunState.EXPIRED:
        return f"Expired at {_when(run.finished_at or run.expires_at)}: nobody decided in time. Request it again."
    if denials:
        d = denials[-1]
        return f"Denied by {mention(d.approver)} at {_when(d.at)}" + (f": {inert(d.comment)}" if d.comment else "")
    if approvals:
        last = approvals[-1]
        line = f"Approved by {', '.join(mention(a.approver) for a in approvals)} at {_when(last.at)}"
    elif run.approvals_required == 0:
        line = "No approval required"
    else:
        line = f"0 of {run.approvals_required} approvals"
    if run.state is RunState.CANCELLED:
        who = f" by {mention(run.cancelled_by)}" if run.cancelled_by else ""
        line += f"\nCancelled{who} at {_when(run.finished_at)}"
    if run.state.terminal and run.duration_seconds is not None:
        line += f"\nFinished after {esc(format_duration(run.duration_seconds))}"
    return line


# ----------------------------------------------------------------------------- progress and result
def progress_message(run_id: int, lines: Sequence[str], *, running: bool = True) -> Message:
    shown = list(lines)[-PROGRESS_LINES:]
    head = f"Run {run_id}: " + ("running…" if running else "playbook finished")
    blocks = [_section(f"*{esc(head)}*"), _section(_code(shown or ["(waiting for the first task)"]))]
    return Message(esc(head), blocks)


def result_message(run: Run, *, limit: int = SECTION_LIMIT) -> tuple[Message, str | None]:
    """The final message of a run, and the full text when it did not fit (to upload as a file)."""
    label = _STATE_LABEL.get(run.state, run.state.value)
    head = f"Run {run.id} ({esc(run.runbook)}) {label}"
    if run.duration_seconds is not None:
        head += f" in {esc(format_duration(run.duration_seconds))}"
    body_lines = list(run.summary)
    if run.error:
        body_lines.append(f"error: {run.error}")
    full = "\n".join(body_lines)
    overflow: str | None = None
    blocks = [_section(head)]
    if body_lines:
        code = _code(body_lines, limit=10**9)
        if len(code) > limit:
            overflow = full
            code = _code(body_lines, limit=limit - 200)
            blocks.append(_section(code))
            blocks.append(_context(f"Output cut: the full text is attached, and `runbook-bot status {run.id}` "
                                   "shows it."))
        else:
            blocks.append(_section(code))
    text = f"Run {run.id} ({run.runbook}) {run.state.value}"
    return Message(esc(text), blocks), overflow


# ----------------------------------------------------------------------------- command replies
def text_reply(text: str) -> Message:
    return Message(esc(text), [_section(esc(text))])


def list_reply(runbooks: Sequence[Runbook]) -> Message:
    if not runbooks:
        return text_reply("There is no runbook you may request.")
    lines = [f"• `{esc(rb.name)}`: {esc(rb.title)}" for rb in runbooks]
    body = "*Runbooks you may request* (`/runbook help NAME`, `/runbook run NAME k=v …`):\n" + "\n".join(lines)
    return Message("Runbooks you may request", [_section(body)])


_GUIDE_ORDER = ("symptoms", "diagnosis", "what this does", "what it does")


def help_reply(rb: Runbook) -> Message:
    blocks: list[Block] = [{"type": "header", "text": _plain(rb.title)}]
    if rb.summary:
        blocks.append(_section(esc(rb.summary)))
    sections = rb.guide_sections()
    shown = [k for k in _GUIDE_ORDER if k in sections] or [k for k in sections if k != "intro"][:3]
    for key in shown:
        blocks.append(_section(f"*{esc(key.capitalize())}*\n{esc(sections[key])}"))
    blocks.append(_section(_code(runbook_text(rb))))
    blocks.append(_context(f"Run it: `/runbook run {esc(rb.name)} key=value …` (missing required parameters "
                           "open a form)"))
    return Message(esc(f"{rb.name}: {rb.title}"), blocks)


def status_reply(run: Run) -> Message:
    return Message(esc(f"run {run.id} {run.state.value}"), [_section(_code(run_text(run)))])


def history_reply(runs: Sequence[Run]) -> Message:
    if not runs:
        return text_reply("No runs yet.")
    lines = [f"{r.id:>6}  {r.state.value:<16} {r.runbook:<24} {r.requested_by}  {r.created_at:%m-%d %H:%M}"
             for r in runs]
    return Message("Recent runs", [_section("*Recent runs*\n" + _code(lines))])


def requested_reply(run: Run, approval_channel: str | None) -> Message:
    if run.state is RunState.PENDING_APPROVAL:
        where = f" in <#{approval_channel}>" if approval_channel else ""
        text = (f"Run {run.id} ({esc(run.runbook)}) requested: {esc(approval_status(run))}; "
                f"the approval card is{where or ' posted'}.")
    else:
        text = f"Run {run.id} ({esc(run.runbook)}) queued: no approval required."
    return Message(f"Run {run.id} requested", [_section(text)])


# ----------------------------------------------------------------------------- the run modal
def _param_element(p: Parameter, given: Any) -> dict[str, Any]:
    initial = given if given is not None else (None if p.secret else p.default)
    if p.type == "int":
        el: dict[str, Any] = {"type": "number_input", "is_decimal_allowed": False, "action_id": ids.PARAM_ACTION}
        if p.min is not None:
            el["min_value"] = str(p.min)
        if p.max is not None:
            el["max_value"] = str(p.max)
        if initial is not None:
            el["initial_value"] = str(initial)
        return el
    if p.type in ("choice", "bool"):
        values = list(p.choices) if p.type == "choice" else ["true", "false"]
        options = [{"text": _plain(v), "value": v} for v in values]
        el = {"type": "static_select", "action_id": ids.PARAM_ACTION, "options": options}
        if initial is not None:
            key = str(initial).lower() if p.type == "bool" else str(initial)
            match = next((o for o in options if o["value"] == key), None)
            if match is not None:
                el["initial_option"] = match
        return el
    el = {"type": "plain_text_input", "action_id": ids.PARAM_ACTION}
    if initial is not None and not p.secret:
        el["initial_value"] = str(initial)
    if p.example and not p.secret:
        el["placeholder"] = _plain(p.example)
    return el


def run_modal(rb: Runbook, given: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A modal with one typed input per parameter; values already given on the command line prefilled.

    Secret values are never sent back to Slack: a secret given on the command line must be typed again.
    """
    blocks: list[Block] = []
    if rb.summary:
        blocks.append(_section(esc(rb.summary)))
    for p in rb.parameters:
        hint = p.description + (" (secret: never shown or stored in clear)" if p.secret else "")
        block: Block = {
            "type": "input", "block_id": ids.PARAM_BLOCK_PREFIX + p.name, "optional": not p.required,
            "label": _plain(p.name), "element": _param_element(p, None if p.secret else given.get(p.name)),
        }
        if hint:
            block["hint"] = _plain(hint)
        blocks.append(block)
    blocks.append({
        "type": "input", "block_id": ids.PARAM_BLOCK_PREFIX + "_reason", "optional": True,
        "label": _plain("Reason"), "element": {"type": "plain_text_input", "action_id": ids.PARAM_ACTION},
    })
    return {
        "type": "modal", "callback_id": ids.VIEW_RUN, "title": _plain(f"Run {rb.name}"[:24]),
        "submit": _plain("Request"), "close": _plain("Cancel"),
        "private_metadata": json.dumps(dict(metadata)), "blocks": blocks,
    }


def modal_values(view: Mapping[str, Any]) -> tuple[dict[str, str], str]:
    """(parameter name -> text value, reason) from a submitted run modal; empty inputs are left out."""
    out: dict[str, str] = {}
    reason = ""
    state = view.get("state", {}).get("values", {})
    for block_id, actions in state.items():
        if not block_id.startswith(ids.PARAM_BLOCK_PREFIX):
            continue
        name = block_id[len(ids.PARAM_BLOCK_PREFIX):]
        v = actions.get(ids.PARAM_ACTION, {})
        if v.get("type") == "static_select":
            value = (v.get("selected_option") or {}).get("value")
        else:
            value = v.get("value")
        if value is None or value == "":
            continue
        if name == "_reason":
            reason = str(value)
        else:
            out[name] = str(value)
    return out, reason


def modal_errors(param: str | None, message: str) -> dict[str, str]:
    """view_submission `errors` for one parameter (or the reason block when it is not a parameter)."""
    return {ids.PARAM_BLOCK_PREFIX + (param or "_reason"): message[:150]}
