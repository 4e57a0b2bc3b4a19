"""Submission of the run modal (opened by `/runbook run NAME` when required parameters are missing).

Parameter values are validated before ack() so Slack can show the error next to the field; the request
itself (check mode: seconds) runs on the executor and its answer is posted ephemerally where the command
was typed. Identity is the signed user of the submission, not the modal's metadata.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.domain.catalog import Runbook
from bot.domain.params import validate_params
from bot.domain.text import check_free_text
from bot.errors import ParameterError, RunbookBotError
from bot.slack import blocks
from bot.slack.deps import Deps, Origin, unknown_user_text

log = logging.getLogger(__name__)


def make(deps: Deps) -> Callable[..., None]:
    def handle(ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient) -> None:
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
            rb = deps.service.runbook(str(meta.get("runbook", "")))
            raw, reason = blocks.modal_values(view)
            check_free_text("reason", reason)  # a ParameterError here is shown next to the Reason field
        except (RunbookBotError, ValueError) as e:
            ack(response_action="errors", errors=blocks.modal_errors(None, str(e)))
            return
        try:
            validate_params(rb, raw)
        except ParameterError as e:
            ack(response_action="errors", errors=blocks.modal_errors(_field(rb, str(e)), str(e)))
            return
        except (RunbookBotError, ValueError) as e:
            ack(response_action="errors", errors=blocks.modal_errors(None, str(e)))
            return
        ack()
        user_id = str((body.get("user") or {}).get("id", ""))
        deps.submit(submit, deps, rb, raw, reason, user_id, str(meta.get("channel", "")), client,
                    origin=Origin(body, client))

    return handle


def _field(rb: Runbook, message: str) -> str | None:
    head = message.split(":", 1)[0].strip()
    if rb.parameter(head) is not None:
        return head
    return rb.parameters[0].name if rb.parameters else None


def submit(deps: Deps, rb: Runbook, raw: dict[str, str], reason: str, user_id: str, channel: str,
           client: WebClient) -> None:
    op = deps.operator(user_id)
    if op is None:
        msg = blocks.text_reply(unknown_user_text(user_id))
    else:
        try:
            res = deps.service.request(rb.name, raw, op, reason=reason, source="slack",
                                       notify={"channel": channel, "user": user_id})
            msg = blocks.requested_reply(res.run, deps.approval_channel)
        except RunbookBotError as e:
            msg = blocks.text_reply(str(e))
    if not channel:
        return
    try:
        client.chat_postEphemeral(channel=channel, user=user_id, text=msg.text, blocks=msg.blocks)
    except SlackApiError as e:
        log.warning("could not answer a run modal of %s: %s", user_id, e.response.get("error"))
