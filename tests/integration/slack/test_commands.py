"""/runbook subcommands, the run modal, request verification, secrets and the HTTP endpoints of serve."""

from __future__ import annotations

import json
import time

import pytest

from tests.fakes.slack_api import SlackSender
from tests.support.slack_bot import Bot, stop

pytestmark = pytest.mark.slow

CANARY = "CANARY-s3cr3t-7d1f0e"


def _nothing_changed(bot: Bot) -> None:
    """Called once the bot has logged that it refused the request at the door (before Bolt parsed it)."""
    assert bot.query("SELECT count(*) AS n FROM runs")[0]["n"] == 0
    assert bot.query("SELECT count(*) AS n FROM audit_events")[0]["n"] == 0
    assert {c.method for c in bot.slack.calls} <= {"auth.test"}
    assert bot.slack.responses == []


def test_bad_signature_is_refused(bot: Bot) -> None:
    """A request signed with the wrong secret gets 401 and changes nothing."""
    body, _ = bot.sender.command_body("U0ALICE", "run greet target=forged")
    reply = bot.sender.post(body, "application/x-www-form-urlencoded", secret="not-the-secret")
    assert reply.status == 401
    bot.wait_logged("refused a Slack request from 127.0.0.1: bad request signature")
    _nothing_changed(bot)


def test_missing_signature_is_refused(bot: Bot) -> None:
    """An unsigned request gets 401 and changes nothing."""
    body, _ = bot.sender.command_body("U0ALICE", "run greet target=unsigned")
    assert bot.sender.post(body, "application/x-www-form-urlencoded", sign=False).status == 401
    bot.wait_logged("refused a Slack request from 127.0.0.1: unsigned request")
    _nothing_changed(bot)


def test_old_timestamp_is_refused(bot: Bot) -> None:
    """A correctly signed request older than five minutes (a replay) gets 401 and changes nothing."""
    body, _ = bot.sender.command_body("U0ALICE", "run greet target=replayed")
    reply = bot.sender.post(body, "application/x-www-form-urlencoded", timestamp=int(time.time()) - 6 * 60)
    assert reply.status == 401
    bot.wait_logged("refused a Slack request from 127.0.0.1: request timestamp outside the five-minute window")
    _nothing_changed(bot)


def test_missing_parameters_open_a_modal_whose_submission_requests_the_run(bot: Bot) -> None:
    """`run NAME` without its required parameters opens a typed modal; submitting it creates the run."""
    reply, _ = bot.sender.command("U0BOB", "run greet message=prefilled")
    assert reply.status == 200
    call = bot.slack.wait_for(lambda: bot.slack.of("views.open"), what="views.open")[0]
    view = call.args["view"]
    assert call.args["trigger_id"].startswith("trig.")
    elements = {b["block_id"]: b["element"] for b in view["blocks"] if b["type"] == "input"}
    assert elements["param__pause"]["type"] == "number_input"
    assert elements["param__tone"]["type"] == "static_select"
    assert elements["param__message"]["initial_value"] == "prefilled"
    values = {
        "param__target": {"value": {"type": "plain_text_input", "value": "modal"}},
        "param__message": {"value": {"type": "plain_text_input", "value": "from the form"}},
        "param__pause": {"value": {"type": "number_input", "value": "0"}},
        "param__tone": {"value": {"type": "static_select", "selected_option": {"value": "loud"}}},
        "param___reason": {"value": {"type": "plain_text_input", "value": "testing the modal"}},
    }
    assert bot.sender.submit_view("U0BOB", view, values).status == 200
    bot.slack.wait_for(lambda: [e for e in bot.ephemerals_to("U0BOB") if "requested" in e], what="the answer")
    run = bot.query("SELECT id, params, requested_by, reason FROM runs")[0]
    assert run["params"]["target"] == "modal" and run["params"]["tone"] == "loud"
    assert run["requested_by"] == "bob" and run["reason"] == "testing the modal"
    bot.card_for(run["id"])


def test_invalid_modal_value_is_shown_next_to_its_field(bot: Bot) -> None:
    """A value that fails the runbook's pattern is refused in the view_submission answer, naming the field."""
    view = {"type": "modal", "callback_id": "runbook_run_modal",
            "private_metadata": json.dumps({"runbook": "greet", "channel": "C0OPS", "user": "U0BOB"}), "blocks": []}
    values = {"param__target": {"value": {"type": "plain_text_input", "value": "Not Valid!"}}}
    reply = bot.sender.submit_view("U0BOB", view, values)
    assert reply.status == 200
    answer = json.loads(reply.body)
    assert answer["response_action"] == "errors" and "param__target" in answer["errors"]
    assert bot.query("SELECT count(*) AS n FROM runs")[0]["n"] == 0


def test_secret_never_reaches_slack(bot: Bot) -> None:
    """A secret parameter's value appears in nothing the bot sent to Slack, though the playbook printed it."""
    run_id = bot.request("U0ALICE", f"run greet target=canary token={CANARY} pause=0 careless=true")
    ts = str(bot.slack.wait_for(
        lambda: (bot.query("SELECT notify FROM runs WHERE id = %s", run_id)[0]["notify"].get("card") or {}).get("ts"),
        what="the card"))
    bot.sender.click("U0BOB", "runbook_approve", run_id)
    bot.slack.wait_for(lambda: [m for m in bot.thread_messages(ts) if "failed" in str(m.get("text"))],
                       what="the result")
    sent = bot.slack.recorded_text()
    assert "token=••••••" in sent  # the card shows that a secret was given, masked
    assert "the token was" in sent and "failing with token" in sent  # the careless playbook's leaks arrived...
    assert CANARY not in sent  # ...redacted
    assert CANARY not in "".join(bot.output)


def test_long_output_is_uploaded_as_a_file(bot: Bot) -> None:
    """A summary too long for a message is cut with a pointer to `runbook-bot status` and uploaded whole."""
    run_id = bot.request("U0ALICE", "run greet target=long pause=0 lines=200")
    bot.card_for(run_id)
    bot.sender.click("U0BOB", "runbook_approve", run_id)
    bot.slack.wait_for(lambda: bot.slack.of("files.completeUploadExternal"), what="the file upload")
    result = next(c.args for c in bot.slack.of("chat.postMessage") if "succeeded" in str(c.args.get("text")))
    assert f"runbook-bot status {run_id}" in json.dumps(result["blocks"])
    uploaded = b"".join(bot.slack.uploads.values()).decode()
    assert "output line 199 " in uploaded


def test_list_shows_only_requestable_runbooks(bot: Bot) -> None:
    """`/runbook list` answers ephemerally with the runbooks the user may request."""
    text = bot.answer("U0DAVE", "list", "Runbooks you may request")
    assert "`greet`" in text and '"response_type": "ephemeral"' in text.replace('":"', '": "')


def test_help_shows_the_guide_escaped(bot: Bot) -> None:
    """`/runbook help NAME` shows the guide's symptoms and what it does, with user text escaped."""
    text = bot.answer("U0ALICE", "help greet", "Symptoms")
    assert "Nobody has said hello" in text and "What this does" in text
    assert "&lt;slowly&gt; &amp; loudly" in text  # plain_text fields (the header) are shown literally by Slack


def test_status_history_and_cancel(bot: Bot) -> None:
    """status shows a run, history lists it, cancel by its requester cancels it."""
    run_id = bot.request("U0ALICE", "run greet target=cancelme")
    assert "pending_approval" in bot.answer("U0ALICE", f"status {run_id}", f"run {run_id}")
    assert "greet" in bot.answer("U0ALICE", "history", "Recent runs")
    _, rid = bot.sender.command("U0ALICE", f"cancel {run_id}")
    assert "cancelled" in bot.wait_response(rid, f"run {run_id}")
    assert bot.run_state(run_id) == "cancelled"


def test_errors_answer_in_one_line(bot: Bot) -> None:
    """A bad parameter is answered with the service's one-line error, and no run is created."""
    _, rid = bot.sender.command("U0ALICE", "run greet target=web pause=99")
    assert "pause" in bot.wait_response(rid, "pause")
    _, rid = bot.sender.command("U0ALICE", "run nosuch")
    assert "unknown runbook" in bot.wait_response(rid, "unknown runbook")
    assert bot.query("SELECT count(*) AS n FROM runs")[0]["n"] == 0


def test_unknown_user_is_told_how_to_get_access(bot: Bot) -> None:
    """A Slack user missing from the operators file gets an explanation naming their user id."""
    assert "U0NOBODY" in bot.answer("U0NOBODY", "list", "operators file")


def test_commands_restricted_to_command_channels(bot: Bot) -> None:
    """With command_channels set, /runbook elsewhere is refused and creates nothing."""
    text = bot.answer("U0ALICE", "run greet target=elsewhere", "not enabled", channel="C0RANDOM",
                      channel_name="random")
    assert "not enabled in this channel" in text
    assert bot.query("SELECT count(*) AS n FROM runs")[0]["n"] == 0


def test_user_text_is_escaped_in_the_card(bot: Bot) -> None:
    """A parameter value with <, > and & cannot become a mention or link on the card."""
    run_id = bot.request("U0ALICE", "run greet target=esc message='<!channel> & <https://evil|x>'")
    blocks = json.dumps(bot.card_for(run_id)["blocks"])
    assert "<!channel>" not in blocks and "&lt;!channel&gt; &amp; &lt;https://evil|x&gt;" in blocks


def test_healthz_and_metrics(bot: Bot) -> None:
    """/healthz reports the database; /metrics has runs by state, queue depth and the ack latency histogram."""
    bot.request("U0ALICE", "run greet target=metrics")
    status, body = bot.get("/healthz")
    assert status == 200 and json.loads(body) == {"db": "ok"}
    status, text = bot.get("/metrics")
    assert status == 200
    assert 'runbook_bot_runs{state="pending_approval"} 1' in text
    assert "runbook_bot_approvals_pending 1" in text and "runbook_bot_queue_depth 0" in text
    assert 'runbook_bot_slack_ack_seconds_bucket{le="+Inf"}' in text
    count = next(line for line in text.splitlines() if line.startswith("runbook_bot_slack_ack_seconds_count"))
    assert int(count.split()[1]) >= 1


def test_sender_is_the_wire_format(bot: Bot) -> None:
    """The url_verification handshake Slack sends when the Request URL is saved is answered with the challenge."""
    sender = SlackSender(bot.sender.events_url, bot.sender.secret, bot.slack.base)
    reply = sender.post(json.dumps({"type": "url_verification", "challenge": "c-123", "token": "t"}),
                        "application/json")
    assert reply.status == 200 and "c-123" in reply.body


def test_sigterm_stops_serve_gracefully(bot: Bot) -> None:
    """SIGTERM stops serve with exit status 0 after it stopped taking requests and stopped its workers."""
    assert stop(bot.proc) == 0
    bot.slack.wait_for(lambda: any(line.strip() == "stopped" for line in bot.output), what="the last line")


def test_runbook_the_user_may_not_request(bot: Bot) -> None:
    """A runbook the user may not request is not listed for them, and `run` explains instead of opening a form."""
    assert "`dbonly`" not in bot.answer("U0ALICE", "list", "Runbooks you may request")
    assert "`dbonly`" in bot.answer("U0DAVE", "list", "Runbooks you may request")
    text = bot.answer("U0ALICE", "run dbonly", "may not request")
    assert "requesters are group:dba" in text
    assert bot.slack.of("views.open") == []


def test_status_of_a_superscript_digit_is_a_one_line_answer(bot: Bot) -> None:
    """`/runbook status ²` ('²'.isdigit() is True, int('²') fails) gets the usage line, not a traceback."""
    text = bot.answer("U0ALICE", "status ²", "usage: /runbook status RUN_ID")
    assert "internal error" not in text
    assert not [line for line in bot.output if "Traceback" in line]


def test_button_with_a_superscript_digit_is_explained(bot: Bot) -> None:
    """A button whose value is '²' is answered ephemerally, not with a traceback in the log."""
    from urllib.parse import urlencode

    payload, _ = bot.sender.click_payload("U0BOB", "runbook_approve", 1)
    payload["actions"][0]["value"] = "²"
    body = urlencode({"payload": json.dumps(payload)})
    assert bot.sender.post(body, "application/x-www-form-urlencoded").status == 200
    told = bot.slack.wait_for(lambda: bot.ephemerals_to("U0BOB"), what="the explanation")
    assert "carries no run id" in told[0]
    assert not [line for line in bot.output if "Traceback" in line]


def test_status_masks_secret_parameters(bot: Bot) -> None:
    """`/runbook status` shows a secret parameter as a mask, never the HMAC stored in its place."""
    run_id = bot.request("U0ALICE", f"run greet target=masked token={CANARY}")
    text = bot.answer("U0ALICE", f"status {run_id}", f"run {run_id}")
    assert "token=••••••" in text or "token=\\u2022\\u2022\\u2022" in text  # the ack's body is JSON
    assert "hmac-sha256" not in text and CANARY not in text


def test_forged_reason_from_the_modal_is_refused_next_to_its_field(bot: Bot) -> None:
    """A reason with a newline (a forged *Status:* line) is refused in the modal and creates nothing."""
    view = {"type": "modal", "callback_id": "runbook_run_modal",
            "private_metadata": json.dumps({"runbook": "greet", "channel": "C0OPS", "user": "U0BOB"}), "blocks": []}
    values = {"param__target": {"value": {"type": "plain_text_input", "value": "web"}},
              "param___reason": {"value": {"type": "plain_text_input",
                                           "value": "INC-1\n*Status:* :white_check_mark: approved, queued"}}}
    answer = json.loads(bot.sender.submit_view("U0BOB", view, values).body)
    assert answer["response_action"] == "errors"
    assert "newline" in answer["errors"]["param___reason"]
    assert bot.query("SELECT count(*) AS n FROM runs")[0]["n"] == 0
