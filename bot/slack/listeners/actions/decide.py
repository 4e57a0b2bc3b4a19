"""The approval card's Approve / Deny buttons.

The click is checked by the service at click time (policy, self-approval, quorum, expiry) under a row lock
in PostgreSQL, so double clicks and simultaneous clicks give exactly one decision. A refused click
changes nothing and is explained to the clicker only (ephemeral); the card itself is updated by the
notifier from the resulting run event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.domain.ids import parse_run_id
from bot.errors import RunbookBotError
from bot.slack import blocks
from bot.slack.deps import Deps, Origin, unknown_user_text

log = logging.getLogger(__name__)


def make(deps: Deps, decision: str) -> Callable[..., None]:
    def handle(ack: Ack, body: dict[str, Any], action: dict[str, Any], client: WebClient) -> None:
        ack()
        # On the quick lane: never behind check modes.
        deps.submit_quick(decide, deps, decision, body, action, client, origin=Origin(body, client))

    return handle


def _tell(client: WebClient, body: dict[str, Any], text: str) -> None:
    channel = str((body.get("channel") or {}).get("id", "")) or str((body.get("container") or {}).get("channel_id", ""))
    user = str((body.get("user") or {}).get("id", ""))
    if not channel or not user:
        return
    try:
        client.chat_postEphemeral(channel=channel, user=user, text=blocks.esc(text))
    except SlackApiError as e:
        log.warning("could not explain a refused click to %s: %s", user, e.response.get("error"))


def decide(deps: Deps, decision: str, body: dict[str, Any], action: dict[str, Any], client: WebClient) -> None:
    user_id = str((body.get("user") or {}).get("id", ""))
    op = deps.operator(user_id)
    if op is None:
        _tell(client, body, unknown_user_text(user_id))
        return
    value = str(action.get("value", ""))
    run_id = parse_run_id(value)
    if run_id is None:
        _tell(client, body, f"this button carries no run id ({value[:40]!r})")
        return
    try:
        if decision == "approve":
            deps.service.approve(run_id, op)
        else:
            deps.service.deny(run_id, op)
    except RunbookBotError as e:
        _tell(client, body, str(e))
