"""The whole path through Slack: /runbook -> approval card -> clicks -> playbook -> progress and result."""

from __future__ import annotations

import itertools
import json
import threading

import pytest

from bot.composition import build_cli
from bot.config import Settings
from tests.support.slack_bot import Bot, card_ts

pytestmark = pytest.mark.slow


def test_slash_command_to_final_message(bot: Bot) -> None:
    """A request posts a card; another operator's approval runs the playbook; progress and result land in the thread."""
    run_id = bot.request("U0ALICE", "run greet target=web message=hi pause=3")
    card = bot.card_for(run_id)
    assert "runbook_approve" in json.dumps(card["blocks"]) and "0 of 1 approvals" in json.dumps(card["blocks"])
    bot.slack.wait_for(lambda: [e for e in bot.ephemerals_to("U0ALICE") if "approval card in" in e],
                       what="the link to the card in the requester's channel")

    reply, _ = bot.sender.click("U0BOB", "runbook_approve", run_id, message_ts=card_ts(bot, run_id))
    assert reply.status == 200
    ts = card_ts(bot, run_id)
    final = bot.slack.wait_for(lambda: [m for m in bot.thread_messages(ts) if "succeeded" in str(m.get("text"))],
                               what="the result message")
    assert "greeted web with 2 characters" in json.dumps(final[0]["blocks"])
    assert bot.run_state(run_id) == "succeeded"
    progress_ts = bot.query("SELECT notify FROM runs WHERE id = %s", run_id)[0]["notify"]["progress_ts"]
    updates = bot.slack.wait_for(lambda: [u for u in bot.updates_of(progress_ts)
                                          if "playbook finished" in str(u.get("text"))], what="final progress")
    assert "Say goodbye" in json.dumps(updates[-1]["blocks"])
    # Throttled: apart from the final edit, progress edits of one message are at least ~1 s apart.
    times = [c.at for c in bot.slack.of("chat.update") if c.args.get("ts") == progress_ts]
    assert all(b - a >= 0.9 for a, b in itertools.pairwise(times[:-1]))
    card_updates = bot.slack.wait_for(lambda: [u for u in bot.updates_of(ts) if "succeeded" in str(u.get("text"))],
                                      what="the card's final update")
    blocks = json.dumps(card_updates[-1]["blocks"])
    assert "Approved by <@U0BOB>" in blocks and "runbook_approve" not in blocks


def test_self_approval_is_refused(bot: Bot) -> None:
    """The requester's own approve click is explained to them only and changes nothing."""
    run_id = bot.request("U0ALICE", "run greet target=self")
    bot.card_for(run_id)
    bot.sender.click("U0ALICE", "runbook_approve", run_id)
    text = bot.slack.wait_for(lambda: [e for e in bot.ephemerals_to("U0ALICE") if "another approver" in e],
                              what="the self-approval explanation")
    assert text
    assert bot.run_state(run_id) == "pending_approval"
    assert bot.query("SELECT count(*) AS n FROM approvals WHERE run_id = %s", run_id)[0]["n"] == 0


def test_non_approver_is_refused(bot: Bot) -> None:
    """An operator outside the approver groups gets an ephemeral explanation and the run stays pending."""
    run_id = bot.request("U0ALICE", "run greet target=nonapprover")
    bot.card_for(run_id)
    bot.sender.click("U0DAVE", "runbook_deny", run_id)
    bot.slack.wait_for(lambda: [e for e in bot.ephemerals_to("U0DAVE") if "may not approve" in e],
                       what="the non-approver explanation")
    assert bot.run_state(run_id) == "pending_approval"


def test_unknown_slack_user_cannot_click(bot: Bot) -> None:
    """A Slack user missing from the operators file is told so and decides nothing."""
    run_id = bot.request("U0ALICE", "run greet target=stranger")
    bot.card_for(run_id)
    bot.sender.click("U0NOBODY", "runbook_approve", run_id)
    bot.slack.wait_for(lambda: [e for e in bot.ephemerals_to("U0NOBODY") if "operators file" in e],
                       what="the unknown-user explanation")
    assert bot.run_state(run_id) == "pending_approval"


def test_slack_user_group_member_may_approve(bot: Bot) -> None:
    """An approver known only through a Slack user group (usergroups.users.list) approves."""
    run_id = bot.request("U0ALICE", "run greet target=group pause=0")
    bot.card_for(run_id)
    bot.sender.click("U0EVE", "runbook_approve", run_id)
    bot.slack.wait_for(lambda: bot.run_state(run_id) == "succeeded", what="the run to succeed")
    assert bot.slack.of("usergroups.users.list")[0].args["usergroup"] == "S0SRE"


def test_without_user_groups_the_operators_file_decides(bot: Bot) -> None:
    """When the workspace plan has no user groups, a user-group-only approver is refused."""
    bot.slack.no_user_groups = True
    run_id = bot.request("U0ALICE", "run greet target=free")
    bot.card_for(run_id)
    bot.sender.click("U0EVE", "runbook_approve", run_id)
    bot.slack.wait_for(lambda: [e for e in bot.ephemerals_to("U0EVE") if "may not approve" in e],
                       what="the refusal")
    assert bot.run_state(run_id) == "pending_approval"


def test_three_simultaneous_clicks_make_one_run(bot: Bot) -> None:
    """Three approvers clicking at once on a two-person runbook give two approvals, one decision, one run."""
    run_id = bot.request("U0ALICE", "run pair target=race")
    bot.card_for(run_id)
    barrier = threading.Barrier(3)
    statuses: list[int] = []

    def click(user: str) -> None:
        barrier.wait()
        statuses.append(bot.sender.click(user, "runbook_approve", run_id)[0].status)

    threads = [threading.Thread(target=click, args=(u,)) for u in ("U0BOB", "U0CAROL", "U0EVE")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200, 200, 200]
    bot.slack.wait_for(lambda: bot.run_state(run_id) == "succeeded", what="the run to succeed")
    assert bot.query("SELECT count(*) AS n FROM approvals WHERE run_id = %s", run_id)[0]["n"] == 2
    events = bot.query("SELECT action FROM audit_events WHERE run_id = %s", run_id)
    assert [e["action"] for e in events].count("queued") == 1
    assert [e["action"] for e in events].count("started") == 1
    refused = bot.slack.wait_for(
        lambda: [c for c in bot.slack.of("chat.postEphemeral") if "not waiting for approval" in json.dumps(c.args)],
        what="the third click's explanation")
    assert len(refused) == 1


def test_double_click_records_one_approval(bot: Bot) -> None:
    """The same approver clicking twice (a retry) approves once."""
    run_id = bot.request("U0ALICE", "run pair target=double")
    bot.card_for(run_id)
    bot.sender.click("U0BOB", "runbook_approve", run_id)
    bot.sender.click("U0BOB", "runbook_approve", run_id)
    bot.slack.wait_for(lambda: [e for e in bot.ephemerals_to("U0BOB") if "already decided" in e],
                       what="the double-click explanation")
    assert bot.run_state(run_id) == "pending_approval"
    assert bot.query("SELECT count(*) AS n FROM approvals WHERE run_id = %s", run_id)[0]["n"] == 1


def test_deny_replaces_the_buttons(bot: Bot) -> None:
    """A denial updates the card: no buttons, who denied."""
    run_id = bot.request("U0ALICE", "run greet target=denied")
    bot.card_for(run_id)
    ts = card_ts(bot, run_id)
    bot.sender.click("U0CAROL", "runbook_deny", run_id)
    update = bot.slack.wait_for(lambda: [u for u in bot.updates_of(ts) if "denied" in str(u.get("text"))],
                                what="the denied card")
    blocks = json.dumps(update[-1]["blocks"])
    assert "Denied by <@U0CAROL>" in blocks and "runbook_approve" not in blocks
    assert bot.run_state(run_id) == "denied"


def test_expired_request_card_says_expired(bot: Bot) -> None:
    """A click after the approval window expires the run, explains it, and the card says expired."""
    run_id = bot.request("U0ALICE", "run fleeting target=late")
    bot.card_for(run_id)
    ts = card_ts(bot, run_id)
    bot.slack.wait_for(lambda: bot.query("SELECT expires_at < now() AS past FROM runs WHERE id = %s",
                                         run_id)[0]["past"], what="the approval window to pass")
    bot.sender.click("U0BOB", "runbook_approve", run_id)
    bot.slack.wait_for(lambda: [e for e in bot.ephemerals_to("U0BOB") if "expired" in e], what="the explanation")
    update = bot.slack.wait_for(lambda: [u for u in bot.updates_of(ts) if "expired" in str(u.get("text"))],
                                what="the expired card")
    assert "Expired at" in json.dumps(update[-1]["blocks"]) and "runbook_approve" not in json.dumps(update[-1])
    assert bot.run_state(run_id) == "expired"


def test_card_for_a_run_requested_and_denied_outside_slack(bot: Bot) -> None:
    """A run requested and denied through the spine elsewhere (the CLI) gets its card, once, and its update."""
    ctx = build_cli(Settings.from_env(bot.env))
    try:
        run_id = ctx.service.request("greet", {"target": "cli"}, ctx.service.directory.operator("alice"),
                                     source="cli").run.id
        bot.card_for(run_id)
        ctx.service.deny(run_id, ctx.service.directory.operator("carol"), "not now")
    finally:
        ctx.close()
    ts = card_ts(bot, run_id)
    update = bot.slack.wait_for(lambda: [u for u in bot.updates_of(ts) if "denied" in str(u.get("text"))],
                                what="the denied card")
    assert "Denied by <@U0CAROL>" in json.dumps(update[-1]["blocks"])
    assert len([c for c in bot.cards() if f"Run {run_id} " in str(c.get("text"))]) == 1
