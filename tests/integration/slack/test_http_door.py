"""The HTTP front door of `serve` under hostile traffic: refusals before parsing, replays and retries
without effect, clicks never behind slow plans, half-open connections closed, the bind address, a port
in use, and what serve prints about runs."""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.fakes.slack_api import FakeSlack, running_fake_slack
from tests.support.slack_bot import Bot, launch, stop

pytestmark = pytest.mark.slow


def _runs(bot: Bot, runbook: str | None = None) -> list[dict[str, object]]:
    if runbook is None:
        return bot.query("SELECT id, runbook, params, state FROM runs ORDER BY id")
    return bot.query("SELECT id, runbook, params, state FROM runs WHERE runbook = %s ORDER BY id", runbook)


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no thread count for pid {pid}")


def test_unsigned_and_malformed_requests_are_refused_without_a_traceback(bot: Bot) -> None:
    """Unsigned, badly signed, bad-timestamp and signed-but-malformed requests get 400/401, one log line each."""
    form = "application/x-www-form-urlencoded"
    assert bot.sender.post("payload={not-json", form, sign=False).status == 401
    assert bot.sender.post("payload={not-json", form, secret="not-the-secret").status == 401
    assert bot.sender.post("payload={not-json", form, timestamp="abc").status == 400
    assert bot.sender.post("payload={not-json", form, sign=False, timestamp="").status == 401  # no headers at all
    assert bot.sender.post("payload={not-json", form).status == 400  # signed, but not Slack's JSON
    bot.slack.wait_for(lambda: sum("refused a Slack request" in line for line in bot.output) >= 4
                       and any("malformed Slack request" in line for line in bot.output), what="the refusal lines")
    out = "".join(bot.output)
    assert "Traceback" not in out and " ERROR " not in out, out
    assert _runs(bot) == []


def test_a_replayed_or_retried_request_has_no_effect(bot: Bot) -> None:
    """A signed no-approval /runbook run sent 3 times makes one run; Slack's retry of a request makes none."""
    form = "application/x-www-form-urlencoded"
    retried, _ = bot.sender.command_body("U0ALICE", "run slow target=retried pause=0")
    reply = bot.sender.post(retried, form, headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    assert reply.status == 200 and reply.body == ""

    body, rid = bot.sender.command_body("U0ALICE", "run slow target=replayed pause=0")
    ts = int(time.time())
    replies = [bot.sender.post(body, form, timestamp=ts) for _ in range(3)]
    assert [r.status for r in replies] == [200, 200, 200]
    bot.wait_response(rid, "Run ")
    first = _runs(bot, "slow")[0]
    bot.slack.wait_for(lambda: bot.run_state(int(str(first["id"]))) == "succeeded", what="the run to finish")
    targets = [r["params"]["target"] for r in _runs(bot)]  # type: ignore[index]
    assert targets == ["replayed"]
    assert sum("replayed Slack request" in line for line in bot.output) == 2
    assert bot.query("SELECT count(*) AS n FROM slack_requests")[0]["n"] == 1


def test_a_click_is_processed_while_four_slow_plans_run(bot: Bot, tmp_path: Path) -> None:
    """Approve is recorded while four /runbook run check modes are still computing their plans."""
    run_id = bot.request("U0ALICE", "run greet target=clicked pause=0")
    bot.card_for(run_id)
    gate = tmp_path / "gate"
    try:
        for n in range(4):
            reply, _ = bot.sender.command("U0ALICE", f"run gated gate={gate} n={n}")
            assert reply.status == 200
        bot.slack.wait_for(lambda: all(Path(f"{gate}.started-{n}").exists() for n in range(4)),
                           what="four check modes to begin")
        reply, _ = bot.sender.click("U0BOB", "runbook_approve", run_id)
        assert reply.status == 200
        bot.slack.wait_for(lambda: bot.query("SELECT 1 FROM approvals WHERE run_id = %s", run_id),
                           timeout=20, what="the approval (not queued behind the plans)")
        assert not gate.exists() and _runs(bot, "gated") == []  # the four plans were still running
    finally:
        gate.write_text("open\n")
    bot.slack.wait_for(lambda: len(_runs(bot, "gated")) == 4, what="the four gated requests")


@pytest.fixture
def quick_timeout_bot(tmp_path: Path, database_url: str) -> Iterator[Bot]:
    """`serve --http 0` whose connections must deliver a request within 3 s."""
    fake = FakeSlack().start()
    try:
        running = launch(tmp_path, database_url, fake, extra_env={"RUNBOOK_BOT_HTTP_READ_TIMEOUT": "3"})
    except BaseException:
        fake.stop()
        raise
    yield running
    stop(running.proc)
    fake.stop()


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except BlockingIOError:
        return False


def test_half_open_connections_neither_block_nor_pile_up(quick_timeout_bot: Bot) -> None:
    """500 half-sent requests (and one that trickles): a signed command is still answered, the threads stay
    bounded, and the server closes every half-open connection after its read timeout."""
    bot = quick_timeout_bot
    url = urlsplit(bot.url)
    address = (url.hostname or "127.0.0.1", int(url.port or 0))
    half_open: list[socket.socket] = []
    stop_trickle = threading.Event()
    trickle_closed = threading.Event()

    def trickle() -> None:  # one header byte every 0.3 s: never idle, never finished
        with socket.create_connection(address, timeout=5) as s:
            s.sendall(b"POST /slack/events HTTP/1.1\r\nHost: x\r\nX-Trickle: ")
            deadline = time.monotonic() + 60
            while not stop_trickle.is_set() and time.monotonic() < deadline:
                try:
                    s.sendall(b"a")
                except OSError:
                    trickle_closed.set()
                    return
                s.settimeout(0.3)
                try:
                    if s.recv(1) == b"":
                        trickle_closed.set()
                        return
                except TimeoutError:
                    continue
                except OSError:
                    trickle_closed.set()
                    return

    trickler = threading.Thread(target=trickle, daemon=True)
    try:
        trickler.start()
        for i in range(500):
            s = socket.create_connection(address, timeout=10)
            s.sendall(b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nX-Half: " + str(i).encode())
            half_open.append(s)
        reply, _ = bot.sender.command("U0ALICE", "list")  # urllib's own 30 s deadline; Slack allows 3 s
        assert reply.status == 200 and "Runbooks you may request" in reply.body
        assert _threads(bot.proc.pid) < 80

        sel = selectors.DefaultSelector()
        for s in half_open:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        open_ = set(half_open)
        deadline = time.monotonic() + 60
        while open_ and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if _closed_by_peer(sock):
                    sel.unregister(sock)
                    open_.discard(sock)
        sel.close()
        assert not open_, f"{len(open_)} half-open connections still open"
        assert trickle_closed.wait(30), "the trickling connection was never closed"
        assert _threads(bot.proc.pid) < 80
        reply, _ = bot.sender.command("U0ALICE", "list")
        assert reply.status == 200
    finally:
        stop_trickle.set()
        for s in half_open:
            s.close()
        trickler.join(10)


def test_serve_binds_loopback_by_default_and_says_so_when_the_port_is_taken(tmp_path: Path, database_url: str) -> None:
    """Without RUNBOOK_BOT_HTTP_HOST serve listens on 127.0.0.1; a second serve on its port exits 2 in one line."""
    with running_fake_slack() as fake:
        bot = launch(tmp_path, database_url, fake, extra_env={"RUNBOOK_BOT_HTTP_HOST": ""})
        try:
            assert bot.url.startswith("http://127.0.0.1:")
            port = int(urlsplit(bot.url).port or 0)
            env = {**bot.env, "RUNBOOK_BOT_HOME": str(tmp_path / "home2")}
            env.pop("RUNBOOK_BOT_HTTP_HOST")
            second = subprocess.run(["runbook-bot", "serve", "--http", str(port), "--no-scheduler"], env=env,
                                    cwd=tmp_path, capture_output=True, text=True, timeout=120)
            assert second.returncode == 2, second.stdout + second.stderr
            # Warnings about the test database's superuser role may come first; the error is one line, last.
            lines = second.stderr.splitlines()
            assert lines[-1] == (f"runbook-bot: error: port {port} on 127.0.0.1 is in use (another runbook-bot "
                                 "serve?): stop it or use --http PORT / HTTP_PORT=...")
            assert all(line.startswith("runbook-bot: warning: ") for line in lines[:-1]), second.stderr
            assert "Traceback" not in second.stdout
            assert not (tmp_path / "home2" / "work").exists() or not os.listdir(tmp_path / "home2" / "work")
        finally:
            stop(bot.proc)


def test_serve_prints_run_transitions_and_progress(bot: Bot) -> None:
    """serve's output has a line per transition of a run and its task progress, as `worker` prints them."""
    run_id = bot.request("U0ALICE", "run greet target=printed pause=0")
    bot.card_for(run_id)
    bot.sender.click("U0BOB", "runbook_approve", run_id)
    bot.slack.wait_for(lambda: any(line.startswith(f"[run {run_id}] succeeded") for line in bot.output),
                       what="the outcome line")
    lines = [line.rstrip("\n") for line in bot.output if line.startswith(f"[run {run_id}]")]
    assert lines[0].startswith(f"[run {run_id}] requested greet ") and "target=printed" in lines[0]
    assert lines[0].endswith("by alice: pending_approval")
    assert any(line == f"[run {run_id}] approved by bob: queued" for line in lines)
    assert any(line.startswith(f"[run {run_id}] started greet") for line in lines)
    assert any("Say goodbye" in line for line in lines)
