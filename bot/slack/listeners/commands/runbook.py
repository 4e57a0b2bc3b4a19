"""`/runbook list | help NAME | run NAME k=v ... | status ID | cancel ID | history`.

Slack wants an answer within 3 seconds. Answers computed from memory alone (help, usage, list when the
request policy needs no Slack API call, refusals of unknown users and other channels), and the small
reads `history` and `status` when the database answers within QUICK_DB_SECONDS, go out in the ack
itself. Everything else is acked at once and runs off Bolt's listener threads, answering through
respond(): requesting a run, which computes the plan in check mode (seconds), on the planning lane;
cancel and the reads on the quick lane, so they never wait behind plans. All answers are ephemeral.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, Respond
from slack_sdk import WebClient

from bot.domain.catalog import Runbook
from bot.domain.ids import parse_run_id
from bot.domain.params import parse_assignments
from bot.domain.policy import Operator, check_quorum_reachable, check_request
from bot.errors import ParameterError, RunbookBotError, StorageError
from bot.slack import blocks
from bot.slack.deps import Deps, Origin, unknown_user_text

log = logging.getLogger(__name__)

# Reads that can answer inside the ack (history, status) get this long for a connection and the query.
QUICK_DB_SECONDS = 0.5
USAGE = ("Usage: `/runbook list` · `/runbook help NAME` · `/runbook run NAME key=value …` · "
         "`/runbook status ID` · `/runbook cancel ID` · `/runbook history`")


def make(deps: Deps) -> Callable[..., None]:
    def handle(ack: Ack, command: dict[str, Any], respond: Respond, client: WebClient) -> None:
        quick = quick_answer(deps, command)
        if quick is not None:
            ack(text=quick.text, blocks=quick.blocks, response_type="ephemeral")
            return
        ack()
        words = _split(str(command.get("text", "")))
        origin = Origin(command, client, respond)
        if words and words[0].lower() == "run":
            deps.submit(answer, deps, command, respond, client, origin=origin)  # check mode: the planning lane
        else:
            deps.submit_quick(answer, deps, command, respond, client, origin=origin)  # never behind plans

    return handle


def _needs_slack_api(deps: Deps) -> bool:
    """Does deciding who may request anything involve a Slack user group (a Web API call)?"""
    return any(deps.service.directory.needs_slack(rb.approval.requesters) for rb in deps.service.catalog)


def quick_answer(deps: Deps, command: dict[str, Any]) -> blocks.Message | None:
    """The answer when it needs neither the database nor Slack's API; None to answer later."""
    try:
        user_id = str(command.get("user_id", ""))
        op = deps.operator(user_id)
        if op is None:
            return blocks.text_reply(unknown_user_text(user_id))
        if not deps.command_channel_allowed(str(command.get("channel_id", "")), str(command.get("channel_name", ""))):
            allowed = ", ".join(deps.service.directory.command_channels)
            return blocks.text_reply(f"/runbook is not enabled in this channel; use one of: {allowed}")
        words = _split(str(command.get("text", "")))
        verb = words[0].lower() if words else "help"
        if verb == "help" or verb not in ("list", "status", "cancel", "history", "run"):
            return dispatch(deps, op, words, command, None)
        if verb == "list" and not _needs_slack_api(deps):
            return blocks.list_reply(deps.service.requestable(op))
        if verb == "history":
            return blocks.history_reply(deps.service.runs(limit=15, timeout=QUICK_DB_SECONDS))
        if verb == "status":
            return blocks.status_reply(deps.service.get(_run_id(words, "status"), timeout=QUICK_DB_SECONDS))
    except StorageError:
        return None  # the database is slow or busy right now: answer through respond() instead
    except RunbookBotError as e:
        return blocks.text_reply(str(e))
    except Exception as e:  # noqa: BLE001 - `answer` tries again, and reports a repeated failure (once)
        log.debug("/runbook quick answer failed (%s); answering later", type(e).__name__)
    return None


def _reply(respond: Respond, msg: blocks.Message) -> None:
    respond(text=msg.text, blocks=msg.blocks, response_type="ephemeral", replace_original=False)


def answer(deps: Deps, command: dict[str, Any], respond: Respond, client: WebClient) -> None:
    user_id = str(command.get("user_id", ""))
    op = deps.operator(user_id)
    if op is None:
        _reply(respond, blocks.text_reply(unknown_user_text(user_id)))
        return
    channel_id, channel_name = str(command.get("channel_id", "")), str(command.get("channel_name", ""))
    if not deps.command_channel_allowed(channel_id, channel_name):
        allowed = ", ".join(deps.service.directory.command_channels)
        _reply(respond, blocks.text_reply(f"/runbook is not enabled in this channel; use one of: {allowed}"))
        return
    try:
        words = _split(str(command.get("text", "")))
        msg = dispatch(deps, op, words, command, client)
    except RunbookBotError as e:
        msg = blocks.text_reply(str(e))
    if msg is not None:
        _reply(respond, msg)


def _split(text: str) -> list[str]:
    text = text.replace("\u201c", '"').replace("\u201d", '"').replace("\u2018", "'").replace("\u2019", "'")
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def _run_id(words: list[str], verb: str) -> int:
    run_id = parse_run_id(words[1]) if len(words) == 2 else None
    if run_id is None:
        raise ParameterError(f"usage: /runbook {verb} RUN_ID (a run number such as 12)")
    return run_id


def dispatch(deps: Deps, op: Operator, words: list[str], command: dict[str, Any],
             client: WebClient | None) -> blocks.Message | None:
    service = deps.service
    verb = words[0].lower() if words else "help"
    if verb == "list":
        return blocks.list_reply(service.requestable(op))
    if verb == "help":
        if len(words) < 2:
            return blocks.text_reply(USAGE)
        return blocks.help_reply(service.runbook(words[1]))
    if verb == "status":
        return blocks.status_reply(service.get(_run_id(words, "status")))
    if verb == "cancel":
        run = service.cancel(_run_id(words, "cancel"), op)
        what = "cancel requested (the playbook is stopping)" if run.cancel_requested and not run.state.terminal \
            else run.state.value
        return blocks.text_reply(f"run {run.id}: {what}")
    if verb == "history":
        return blocks.history_reply(service.runs(limit=15))
    if verb == "run":
        if len(words) < 2:
            return blocks.text_reply("usage: /runbook run NAME key=value …")
        return _run(deps, op, words[1], words[2:], command, client)
    return blocks.text_reply(f"unknown subcommand {verb!r}. {USAGE}")


def _missing(rb: Runbook, raw: dict[str, str]) -> list[str]:
    return [p.name for p in rb.parameters if p.required and p.default is None and not raw.get(p.name)]


def _run(deps: Deps, op: Operator, name: str, words: list[str], command: dict[str, Any],
         client: WebClient | None) -> blocks.Message | None:
    rb = deps.service.runbook(name)
    raw = parse_assignments(words)
    if _missing(rb, raw) and client is not None:
        check_request(deps.service.directory, rb, op, deps.service.slack_groups)  # no form for a refusal
        check_quorum_reachable(deps.service.directory, rb, op)
        meta = {"runbook": rb.name, "channel": command.get("channel_id", ""), "user": command.get("user_id", "")}
        client.views_open(trigger_id=str(command.get("trigger_id", "")), view=blocks.run_modal(rb, raw, meta))
        return None
    res = deps.service.request(rb.name, raw, op, source="slack", notify={
        "channel": str(command.get("channel_id", "")), "user": str(command.get("user_id", "")),
    })
    return blocks.requested_reply(res.run, deps.approval_channel)
