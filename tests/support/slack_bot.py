"""A real `runbook-bot serve --http` (subprocess) over real PostgreSQL and ansible-runner, talking to the
fake Slack Web API; tests send it signed Slack requests and poll what it told Slack (Bot)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from tests.fakes.slack_api import FakeSlack, SlackSender
from tests.support.paths import ROOT
from tests.support.processes import stop_process
from tests.support.spine import bot_env

CATALOG = ROOT / "tests" / "integration" / "slack" / "catalog"


SIGNING_SECRET = "test-signing-secret-" + uuid.uuid4().hex[:8]


@dataclass
class Bot:
    url: str
    slack: FakeSlack
    sender: SlackSender
    database_url: str
    proc: subprocess.Popen[str]
    output: list[str]
    env: dict[str, str]

    def query(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        with psycopg.connect(self.database_url, row_factory=dict_row) as conn:
            return conn.execute(sql, args).fetchall()

    def run_state(self, run_id: int) -> str:
        return str(self.query("SELECT state FROM runs WHERE id = %s", run_id)[0]["state"])

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as resp:  # noqa: S310 - 127.0.0.1
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    # ------------------------------------------------------------- what the bot told Slack
    def cards(self) -> list[dict[str, Any]]:
        return [c.args for c in self.slack.of("chat.postMessage")
                if c.args.get("channel") == "C0APPROVALS" and not c.args.get("thread_ts")]

    def card_for(self, run_id: int) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((c for c in self.cards() if f"Run {run_id} " in str(c.get("text"))), None)

        return self.slack.wait_for(find, what=f"the approval card of run {run_id}")  # type: ignore[no-any-return]

    def thread_messages(self, ts: str) -> list[dict[str, Any]]:
        return [c.args for c in self.slack.of("chat.postMessage") if c.args.get("thread_ts") == ts]

    def updates_of(self, ts: str) -> list[dict[str, Any]]:
        return [c.args for c in self.slack.of("chat.update") if c.args.get("ts") == ts]

    def ephemerals_to(self, user: str) -> list[str]:
        return [json.dumps(c.args) for c in self.slack.of("chat.postEphemeral") if c.args.get("user") == user]

    def responses(self, rid: str) -> str:
        return "\n".join(self.slack.response_texts(rid))

    def wait_response(self, rid: str, needle: str) -> str:
        return self.slack.wait_for(lambda: needle in self.responses(rid) and self.responses(rid),  # type: ignore[no-any-return]
                                   what=f"a response containing {needle!r}")

    def wait_logged(self, needle: str) -> str:
        """The first line of serve's output containing `needle`, once it has been written."""
        return self.slack.wait_for(lambda: next((line for line in self.output if needle in line), None),  # type: ignore[no-any-return]
                                   what=f"a log line containing {needle!r}")

    def answer(self, user: str, text: str, needle: str, **kw: Any) -> str:
        """The answer to a slash command: in the HTTP response (the ack) or, when slower, via response_url."""
        reply, rid = self.sender.command(user, text, **kw)
        assert reply.status == 200
        if reply.body and needle in reply.body:
            return reply.body
        return self.wait_response(rid, needle)

    def request(self, user: str, text: str) -> int:
        """`/runbook run ...` and the id of the run it created."""
        reply, rid = self.sender.command(user, text)
        assert reply.status == 200
        body = self.wait_response(rid, "Run ")
        return int(body.split("Run ", 1)[1].split(" ", 1)[0])


def _reader(stream: Any, sink: list[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        sink.append(line)
        lines.put(line)


def launch(tmp_path: Path, database_url: str, fake: FakeSlack, extra_env: dict[str, str] | None = None,
           argv: tuple[str, ...] = ("serve", "--http", "0", "--no-scheduler")) -> Bot:
    """Start `runbook-bot serve --http 0` on 127.0.0.1 with two workers, Slack pointed at `fake`."""
    env = {
        **os.environ,
        **bot_env(tmp_path / "home", CATALOG, database_url),
        "RUNBOOK_BOT_HTTP_HOST": "127.0.0.1",
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": fake.url,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
    }
    env.pop("SLACK_APP_TOKEN", None)
    env.update(extra_env or {})
    proc = subprocess.Popen(["runbook-bot", *argv], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, output, lines), daemon=True).start()
    url = None
    try:
        while url is None:
            try:
                line = lines.get(timeout=60)
            except queue.Empty:
                raise AssertionError("serve did not start:\n" + "".join(output)) from None
            if line.startswith("listening on "):
                url = line.split()[2]
            if proc.poll() is not None and lines.empty():
                raise AssertionError("serve exited:\n" + "".join(output))
    except BaseException:
        stop(proc)
        raise
    return Bot(url, fake, SlackSender(url + "/slack/events", SIGNING_SECRET, fake.base), database_url, proc, output,
               env)


def stop(proc: subprocess.Popen[str]) -> int:
    """SIGTERM (a graceful stop), then the exit status; killed after 30 s."""
    return stop_process(proc, 30.0)


@contextmanager
def running_bot(tmp_path: Path, database_url: str, fake: FakeSlack,
                extra_env: dict[str, str] | None = None) -> Iterator[Bot]:
    """launch() against the started `fake`; on exit the bot is stopped, then the fake."""
    try:
        running = launch(tmp_path, database_url, fake, extra_env=extra_env)
        try:
            yield running
        finally:
            stop(running.proc)
    finally:
        fake.stop()


def card_ts(bot: Bot, run_id: int) -> str:
    """The ts of the run's approval card, as the bot recorded it in the run."""
    return str(bot.slack.wait_for(
        lambda: (bot.query("SELECT notify FROM runs WHERE id = %s", run_id)[0]["notify"].get("card") or {}).get("ts"),
        what="the card's ts in the run"))
