"""An unexpected failure in a Slack listener is logged once, with the run id when the request names one,
and the person who typed or clicked is told; the real Bolt app, signed requests, the fake Slack Web API."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from slack_bolt import App
from slack_bolt.request import BoltRequest

from bot import testing
from bot.config import Settings
from bot.slack.app import create_app
from tests.fakes.slack_api import FakeSlack, SlackSender, signature

SECRET = "test-signing-secret"


class Broken(RuntimeError):
    """What the service raises here: not one of our errors, so nothing in a listener catches it."""


@dataclass
class BrokenService:
    """The part of RunService the listeners touch; every call that would reach the database fails."""

    directory: Any = field(default_factory=lambda: testing.directory({
        "operators": {"alice": {"slack": "U0ALICE"}, "bob": {"slack": "U0BOB"}}}))
    catalog: tuple[Any, ...] = ()
    slack_groups: Any = None

    def get(self, run_id: int, timeout: float | None = None) -> Any:
        raise Broken(f"the database caught fire reading run {run_id}")

    def approve(self, run_id: int, op: Any, comment: str = "") -> Any:
        raise Broken("the database caught fire")

    def runbook(self, name: str) -> Any:
        raise Broken("the catalog caught fire")


@dataclass
class Harness:
    app: App
    fake: FakeSlack
    sender: SlackSender
    lanes: ThreadPoolExecutor

    def post(self, body: str) -> int:
        ts = str(int(time.time()))
        headers = {"content-type": "application/x-www-form-urlencoded", "x-slack-request-timestamp": ts,
                   "x-slack-signature": signature(SECRET, ts, body)}
        return self.app.dispatch(BoltRequest(body=body, headers=headers)).status  # type: ignore[arg-type]

    def settle(self) -> None:
        """Wait for the work on the listener lanes to finish."""
        self.lanes.shutdown(wait=True)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    fake = FakeSlack().start()
    lanes = ThreadPoolExecutor(max_workers=2)
    settings = Settings(home=tmp_path, database_url=None, runbooks_dir=tmp_path, playbooks_dir=tmp_path,
                        config_file=tmp_path / "operators.yaml", inventory=tmp_path, slack_bot_token="xoxb-test",
                        slack_signing_secret=SECRET, slack_api_url=fake.url)
    try:
        app = create_app(settings, BrokenService(), executor=lanes, quick_executor=lanes)  # type: ignore[arg-type]
        yield Harness(app, fake, SlackSender("unused", SECRET, fake.base), lanes)
    finally:
        lanes.shutdown(wait=True)
        fake.stop()


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info is not None or r.levelno >= logging.ERROR]


def test_failed_command_is_logged_once_with_the_run_id_and_answered(harness: Harness,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """`/runbook status 12` failing on the service: one traceback naming run 12; the user gets an answer."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="slack_sdk")
    body, rid = harness.sender.command_body("U0ALICE", "status 12")
    assert harness.post(body) == 200
    harness.fake.wait_for(lambda: harness.fake.response_texts(rid), what="the answer through response_url")
    harness.settle()
    answer = "\n".join(harness.fake.response_texts(rid))
    assert "internal error for run 12" in answer and "the bot's log" in answer
    logged = _tracebacks(caplog)
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert "run 12" in logged[0].getMessage() and "/runbook status" in logged[0].getMessage()
    assert logged[0].exc_info is not None and logged[0].exc_info[0] is Broken


def test_failed_click_is_logged_once_with_the_run_id_and_explained(harness: Harness,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """An Approve click failing on the service: one traceback naming the run; the clicker is told privately."""
    caplog.set_level(logging.INFO)
    payload, _ = harness.sender.click_payload("U0BOB", "runbook_approve", 7)
    assert harness.post(urlencode({"payload": json.dumps(payload)})) == 200
    harness.fake.wait_for(lambda: harness.fake.of("chat.postEphemeral"), what="the private explanation")
    harness.settle()
    told = harness.fake.of("chat.postEphemeral")[0].args
    assert told["user"] == "U0BOB" and told["channel"] == "C0APPROVALS"
    assert "internal error for run 7" in told["text"]
    logged = _tracebacks(caplog)
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert "run 7" in logged[0].getMessage() and "runbook_approve" in logged[0].getMessage()


def test_failure_on_bolts_thread_reaches_the_one_error_handler(harness: Harness,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """A run modal submission failing before its ack: the @app.error handler logs it once and tells the
    user in the channel the command was typed in."""
    caplog.set_level(logging.INFO)
    view = {"type": "modal", "callback_id": "runbook_run_modal", "blocks": [],
            "private_metadata": json.dumps({"runbook": "greet", "channel": "C0OPS", "user": "U0ALICE"})}
    submitted = {**view, "id": "V0SUBMIT", "state": {"values": {}}, "hash": "h"}
    payload = {"type": "view_submission", "team": {"id": "T0FAKE"}, "api_app_id": "A0APP", "token": "legacy",
               "user": {"id": "U0ALICE", "team_id": "T0FAKE"}, "trigger_id": "trig", "view": submitted}
    harness.post(urlencode({"payload": json.dumps(payload)}))
    harness.fake.wait_for(lambda: harness.fake.of("chat.postEphemeral"), what="the private explanation")
    told = harness.fake.of("chat.postEphemeral")[0].args
    assert told["user"] == "U0ALICE" and told["channel"] == "C0OPS" and told["text"].startswith("internal error")
    logged = _tracebacks(caplog)
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert "modal runbook_run_modal" in logged[0].getMessage()
