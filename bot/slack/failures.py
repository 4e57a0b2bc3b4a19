"""Unexpected failures of Slack listeners: logged once, with the run id when the request names one, and
explained to the person who clicked or typed.

Listeners catch our own errors (RunbookBotError) and answer with their one-line message; nothing else is
caught where it happens. A failure on Bolt's listener threads reaches the app's one `@app.error` handler
(`on_error`, registered by bot.slack.listeners); a failure on the listener lanes (bot.slack.deps) reaches
`report` directly. Both log the traceback once and answer ephemerally: through `respond` when the
request has a response_url, else with chat.postEphemeral where the request came from.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from slack_bolt import Respond
from slack_sdk import WebClient

from bot.domain.ids import RunId, parse_run_id
from bot.slack import blocks

log = logging.getLogger(__name__)

RUN_VERBS = ("status", "cancel")  # `/runbook VERB ID`: the commands that name a run


def run_id_of(body: Mapping[str, Any]) -> RunId | None:
    """The run a Slack request is about, when it names one: an approval button's value, or the id of
    `/runbook status ID` / `/runbook cancel ID`."""
    for action in body.get("actions") or ():
        run_id = parse_run_id(str(action.get("value", "")))
        if run_id is not None:
            return run_id
    words = str(body.get("text", "")).split() if body.get("command") else []
    if len(words) == 2 and words[0].lower() in RUN_VERBS:
        return parse_run_id(words[1])
    return None


def _what(body: Mapping[str, Any]) -> str:
    """What was asked, for the log: `/runbook status`, `button runbook_approve`, `modal runbook_run_modal`."""
    if body.get("command"):
        words = str(body.get("text", "")).split()
        return f"{body['command']} {words[0].lower() if words else 'help'}"
    actions = body.get("actions") or ()
    if actions:
        return f"button {actions[0].get('action_id', '?')}"
    view = body.get("view") or {}
    if view:
        return f"modal {view.get('callback_id', '?')}"
    return str(body.get("type") or "request")


def _user(body: Mapping[str, Any]) -> str:
    return str(body.get("user_id") or (body.get("user") or {}).get("id", ""))


def _channel(body: Mapping[str, Any]) -> str:
    if body.get("channel_id"):
        return str(body["channel_id"])
    channel = str((body.get("channel") or {}).get("id", "")) or str((body.get("container") or {}).get("channel_id", ""))
    if channel:
        return channel
    try:  # the run modal keeps the channel the command was typed in
        meta = json.loads((body.get("view") or {}).get("private_metadata") or "{}")
    except ValueError:
        return ""
    return str(meta.get("channel", "")) if isinstance(meta, dict) else ""


def report(error: BaseException, body: Mapping[str, Any], respond: Respond | None, client: WebClient | None) -> None:
    """Log `error` once (traceback, what was asked, the run id when known) and tell the user."""
    run_id = run_id_of(body)
    about = f" for run {run_id}" if run_id is not None else ""
    log.error("Slack %s failed%s (user %s)", _what(body), about, _user(body) or "?",
              exc_info=(type(error), error, error.__traceback__))
    where = f"search it for run {run_id}" if run_id is not None else \
        f"search it around {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC"
    text = f"internal error{about}: the administrators can find it in the bot's log ({where})"
    user, channel = _user(body), _channel(body)
    try:
        if respond is not None and body.get("response_url"):  # Bolt hands one out even without a URL
            respond(text=blocks.esc(text), response_type="ephemeral", replace_original=False)
        elif client is not None and user and channel:
            client.chat_postEphemeral(channel=channel, user=user, text=blocks.esc(text))
    except Exception as e:  # noqa: BLE001 - the failure is logged above; telling the user is best effort
        log.warning("could not tell %s about the failure: %s", user or "?", e)


def on_error(error: Exception, body: dict[str, Any], respond: Respond | None, client: WebClient) -> None:
    """The app's `@app.error` handler (Bolt passes these by name)."""
    report(error, body, respond, client)
