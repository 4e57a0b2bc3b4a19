"""A fake Slack: the Web API (HTTP on 127.0.0.1, the wire format slack_sdk speaks), response_url endpoints,
file upload URLs, and a client that sends signed Slack requests (v0 HMAC) the way Slack does.

Every call is recorded (method, arguments, token), so tests assert on what the bot told Slack and can
grep everything it sent (canary secrets). As in bolt-python's own scenario tests (mock_web_api_server),
`auth.test` answers for any token, because `App()` calls it when built.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.support.waiting import wait_for


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    token: str | None
    at: float = field(default_factory=time.monotonic)


def _decode_value(value: Any) -> Any:
    """Form-encoded arguments carry JSON for blocks/attachments/view/files: decode them back."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class FakeSlack:
    """The fake Web API server; `url` is the SLACK_API_URL to give the bot (ends with /api/)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.responses: list[tuple[str, dict[str, Any]]] = []  # (response_url id, JSON body)
        self.uploads: dict[str, bytes] = {}
        self.usergroups: dict[str, list[str]] = {}
        self.no_user_groups = False  # True: usergroups.* answer paid_teams_only (a free workspace)
        self.socket_url: str | None = None  # apps.connections.open hands this out (FakeSocketMode.url)
        self._lock = threading.Lock()
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                path = urlsplit(self.path).path
                if path.startswith("/api/"):
                    body = fake._api(path[len("/api/"):], raw, dict(self.headers.items()))
                    self._reply(200, json.dumps(body).encode(), "application/json")
                elif path.startswith("/response/"):
                    try:
                        payload = json.loads(raw or b"{}")
                    except ValueError:
                        payload = {"raw": raw.decode(errors="replace")}
                    with fake._lock:
                        fake.responses.append((path[len("/response/"):], payload))
                    self._reply(200, b"ok", "text/plain")
                elif path.startswith("/upload/"):
                    with fake._lock:
                        fake.uploads[path[len("/upload/"):]] = raw
                    self._reply(200, b"OK - " + str(len(raw)).encode(), "text/plain")
                else:
                    self._reply(404, b"not found", "text/plain")

            def _reply(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/api/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> FakeSlack:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ----------------------------------------------------------------- the Web API
    def _api(self, method: str, raw: bytes, headers: dict[str, str]) -> dict[str, Any]:
        ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if "json" in ctype:
            args = json.loads(raw or b"{}")
        else:
            args = {k: _decode_value(v[-1]) for k, v in parse_qs(raw.decode()).items()}
        token = auth.split(" ", 1)[1] if auth.startswith("Bearer ") else args.get("token")
        with self._lock:
            self.calls.append(Call(method, args, token))
        if not token:
            return {"ok": False, "error": "not_authed"}
        return self._answer(method, args)

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"ok": True, "url": "https://fake.slack.test/", "team": "Fake", "user": "runbook-bot",
                    "team_id": "T0FAKE", "user_id": "U0BOT", "bot_id": "B0BOT", "is_enterprise_install": False}
        if method == "apps.connections.open":
            if self.socket_url is None:
                return {"ok": False, "error": "socket_mode_not_enabled"}
            return {"ok": True, "url": self.socket_url}
        if method == "chat.postMessage":
            ts = f"1700000000.{next(self._ts):06d}"
            return {"ok": True, "channel": args.get("channel"), "ts": ts,
                    "message": {"text": args.get("text"), "ts": ts, "thread_ts": args.get("thread_ts")}}
        if method == "chat.update":
            return {"ok": True, "channel": args.get("channel"), "ts": args.get("ts"), "text": args.get("text")}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": f"1700000001.{next(self._ts):06d}"}
        if method == "views.open":
            return {"ok": True, "view": {"id": f"V{next(self._ids):06d}", **(args.get("view") or {})}}
        if method == "usergroups.users.list":
            if self.no_user_groups:
                return {"ok": False, "error": "paid_teams_only"}
            group = str(args.get("usergroup"))
            if group not in self.usergroups:
                return {"ok": False, "error": "no_such_subteam"}
            return {"ok": True, "users": self.usergroups[group]}
        if method == "files.getUploadURLExternal":
            file_id = f"F{next(self._ids):06d}"
            return {"ok": True, "upload_url": f"{self.base}/upload/{file_id}", "file_id": file_id}
        if method == "files.completeUploadExternal":
            files = args.get("files") or []
            return {"ok": True, "files": [{"id": f.get("id"), "title": f.get("title")} for f in files]}
        if method == "files.upload":
            return {"ok": True, "file": {"id": f"F{next(self._ids):06d}"}}
        return {"ok": False, "error": "unknown_method"}

    # ----------------------------------------------------------------- assertions
    def of(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def recorded_text(self) -> str:
        """Everything the bot sent to Slack (API calls, response_url posts, uploads) as one string."""
        with self._lock:
            parts = [json.dumps({"m": c.method, "a": c.args}, ensure_ascii=False) for c in self.calls]
            parts += [json.dumps(r, ensure_ascii=False) for r in self.responses]
            parts += [b.decode(errors="replace") for b in self.uploads.values()]
        return "\n".join(parts)

    def response_texts(self, response_id: str) -> list[str]:
        with self._lock:
            return [json.dumps(p, ensure_ascii=False) for rid, p in self.responses if rid == response_id]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
        """Poll until `predicate()` is truthy (listeners finish after the HTTP response); returns its value."""
        return wait_for(predicate, timeout=timeout,
                        what=lambda: f"{what}; Slack calls: {[c.method for c in self.calls]}")


class FakeSocketMode:
    """Slack's Socket Mode WebSocket (aiohttp, 127.0.0.1): sends `hello`, then the envelopes a test pushes,
    and records the acks (`{"envelope_id": ...}`) the app sends back."""

    def __init__(self) -> None:
        self.acks: dict[str, dict[str, Any]] = {}
        self.connected = threading.Event()
        self._loop: Any = None
        self._ws: Any = None
        self._runner: Any = None
        self.url = ""
        self._lock = threading.Lock()

    def start(self) -> FakeSocketMode:
        import asyncio

        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._serve())
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        if not ready.wait(10):
            raise RuntimeError("fake Socket Mode server did not start")
        return self

    async def _serve(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/link", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"ws://127.0.0.1:{port}/link"

    async def _handle(self, request: Any) -> Any:
        from aiohttp import WSMsgType, web

        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._ws = ws
        await ws.send_json({"type": "hello", "num_connections": 1,
                            "connection_info": {"app_id": "A0APP"}, "debug_info": {"host": "fake"}})
        self.connected.set()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                data = json.loads(msg.data)
                if "envelope_id" in data:
                    with self._lock:
                        self.acks[data["envelope_id"]] = data
        return ws

    def send(self, envelope_type: str, payload: dict[str, Any]) -> str:
        """Push one envelope to the connected app; returns its envelope id."""
        import asyncio
        import uuid

        if not self.connected.wait(30):
            raise AssertionError("the app never connected over Socket Mode")
        envelope_id = str(uuid.uuid4())
        envelope = {"envelope_id": envelope_id, "type": envelope_type, "payload": payload,
                    "accepts_response_payload": envelope_type != "events_api"}
        asyncio.run_coroutine_threadsafe(self._ws.send_json(envelope), self._loop).result(10)
        return envelope_id

    def ack(self, envelope_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self.acks.get(envelope_id)

    def stop(self) -> None:
        import asyncio

        if self._loop is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


@contextmanager
def running_fake_slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    try:
        yield fake
    finally:
        fake.stop()


# ----------------------------------------------------------------------------- signed requests to the bot
def signature(secret: str, timestamp: str, body: str) -> str:
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass
class Reply:
    status: int
    body: str


class SlackSender:
    """Sends what Slack sends to `/slack/events`: slash commands, block actions, view submissions, signed."""

    def __init__(self, events_url: str, secret: str, response_base: str) -> None:
        """`response_base`: where response_url points (the fake Slack's base URL)."""
        self.events_url, self.secret, self.response_base = events_url, secret, response_base
        self._n = itertools.count(1)

    def post(self, body: str, content_type: str, *, timestamp: int | str | None = None,
             secret: str | None = None, sign: bool = True, headers: dict[str, str] | None = None) -> Reply:
        """`timestamp`: as sent in X-Slack-Request-Timestamp (a str to send a malformed one); `headers`:
        more headers (e.g. Slack's X-Slack-Retry-Num)."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        sent = {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts, **(headers or {})}
        if sign:
            sent["X-Slack-Signature"] = signature(secret or self.secret, ts, body)
        headers = sent
        req = urllib.request.Request(self.events_url, data=body.encode(), headers=headers,  # noqa: S310
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - a 127.0.0.1 test URL
                return Reply(resp.status, resp.read().decode())
        except urllib.error.HTTPError as e:
            return Reply(e.code, e.read().decode())

    def command_payload(self, user: str, text: str, *, channel: str = "C0OPS",
                        channel_name: str = "ops") -> tuple[dict[str, str], str]:
        """(fields, response_url id) of a `/runbook` slash command."""
        rid = f"r{next(self._n)}"
        form = {
            "token": "legacy", "team_id": "T0FAKE", "team_domain": "fake", "channel_id": channel,
            "channel_name": channel_name, "user_id": user, "user_name": f"name-of-{user}",
            "command": "/runbook", "text": text, "api_app_id": "A0APP", "is_enterprise_install": "false",
            "response_url": f"{self.response_base}/response/{rid}", "trigger_id": f"trig.{rid}",
        }
        return form, rid

    def command_body(self, user: str, text: str, **kw: Any) -> tuple[str, str]:
        """(form body, response_url id) of a `/runbook` slash command."""
        form, rid = self.command_payload(user, text, **kw)
        return urlencode(form), rid

    def command(self, user: str, text: str, **kw: Any) -> tuple[Reply, str]:
        body, rid = self.command_body(user, text, **kw)
        return self.post(body, "application/x-www-form-urlencoded"), rid

    def click_payload(self, user: str, action_id: str, run_id: int, *, channel: str = "C0APPROVALS",
                      message_ts: str = "1700000000.000001") -> tuple[dict[str, Any], str]:
        """(block_actions payload, response_url id) of a click on the approval card."""
        rid = f"r{next(self._n)}"
        payload = {
            "type": "block_actions", "team": {"id": "T0FAKE", "domain": "fake"},
            "user": {"id": user, "username": f"name-of-{user}", "team_id": "T0FAKE"},
            "api_app_id": "A0APP", "token": "legacy", "trigger_id": f"trig.{rid}",
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False},
            "channel": {"id": channel, "name": "approvals"},
            "message": {"type": "message", "ts": message_ts, "text": "card"},
            "response_url": f"{self.response_base}/response/{rid}",
            "actions": [{"action_id": action_id, "block_id": f"decide-{run_id}", "type": "button",
                         "value": str(run_id), "action_ts": str(time.time())}],
        }
        return payload, rid

    def click(self, user: str, action_id: str, run_id: int, **kw: Any) -> tuple[Reply, str]:
        payload, rid = self.click_payload(user, action_id, run_id, **kw)
        return self.post(urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded"), rid

    def submit_view(self, user: str, view: dict[str, Any], values: dict[str, Any]) -> Reply:
        """Submit a modal the bot opened (`view` as sent to views.open) with `values` per block id."""
        submitted = {**view, "id": "V0SUBMIT", "team_id": "T0FAKE", "app_id": "A0APP",
                     "state": {"values": values}, "hash": "h"}
        payload = {
            "type": "view_submission", "team": {"id": "T0FAKE", "domain": "fake"},
            "user": {"id": user, "username": f"name-of-{user}", "team_id": "T0FAKE"},
            "api_app_id": "A0APP", "token": "legacy", "trigger_id": "trig.view", "view": submitted,
            "response_urls": [],
        }
        return self.post(urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded")
