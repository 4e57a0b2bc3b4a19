"""Socket Mode: with SLACK_APP_TOKEN set, serve connects out over a WebSocket and runs the same listeners."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.slack_api import FakeSlack, FakeSocketMode
from tests.support.slack_bot import Bot, launch, stop

pytestmark = pytest.mark.slow


@pytest.fixture
def socket_bot(tmp_path: Path, database_url: str) -> Iterator[tuple[Bot, FakeSocketMode]]:
    fake = FakeSlack().start()
    sock = FakeSocketMode().start()
    fake.socket_url = sock.url
    try:
        running = launch(tmp_path, database_url, fake, {"SLACK_APP_TOKEN": "xapp-test-token"})
        try:
            yield running, sock
        finally:
            assert stop(running.proc) == 0
    finally:
        sock.stop()
        fake.stop()


def test_socket_mode_command_and_approval(socket_bot: tuple[Bot, FakeSocketMode]) -> None:
    """A slash command and an approval click arrive as envelopes, are acked, and run the playbook."""
    bot, sock = socket_bot
    assert any("socket mode" in line for line in bot.output)
    fields, rid = bot.sender.command_payload("U0ALICE", "run greet target=socket pause=0")
    envelope = sock.send("slash_commands", fields)
    bot.slack.wait_for(lambda: sock.ack(envelope), what="the ack of the slash command")
    body = bot.wait_response(rid, "Run ")
    run_id = int(body.split("Run ", 1)[1].split(" ", 1)[0])
    card = bot.card_for(run_id)
    assert "runbook_approve" in json.dumps(card["blocks"])
    payload, _ = bot.sender.click_payload("U0BOB", "runbook_approve", run_id)
    click = sock.send("interactive", payload)
    bot.slack.wait_for(lambda: sock.ack(click), what="the ack of the click")
    bot.slack.wait_for(lambda: bot.run_state(run_id) == "succeeded", what="the run to succeed")
    assert [c for c in bot.slack.of("apps.connections.open") if c.token == "xapp-test-token"]
    status, text = bot.get("/metrics")
    count = next(line for line in text.splitlines() if line.startswith("runbook_bot_slack_ack_seconds_count"))
    assert status == 200 and int(count.split()[1]) >= 2
