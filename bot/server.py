"""`runbook-bot serve`: one process runs Slack, the worker pool, the scheduler, `/healthz` and `/metrics`.

Slack arrives over Socket Mode when SLACK_APP_TOKEN is set (no public URL), otherwise as HTTP POSTs to
`/slack/events` on `--http PORT`, verified with SLACK_SIGNING_SECRET by Bolt (401 on a bad signature or
a timestamp older than 5 minutes). One stdlib ThreadingHTTPServer serves all paths: the Bolt app is
dispatched by hand (BoltRequest -> App.dispatch -> BoltResponse). SIGTERM/SIGINT stop it gracefully:
stop taking requests, finish the Slack work in flight, stop the workers, flush Slack notifications.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from bot.domain.runs import RunState
from bot.errors import ConfigError, RunbookBotError
from bot.scheduler import alert_sinks
from bot.scheduler import metrics as scheduler_metrics
from bot.scheduler import start as start_scheduler

if TYPE_CHECKING:
    from slack_bolt import App
    from slack_sdk.socket_mode.request import SocketModeRequest

    from bot.app import Context

log = logging.getLogger(__name__)

SLACK_PATH = "/slack/events"
HOUSEKEEPING_SECONDS = 10.0
MAX_BODY = 1 << 20  # Slack payloads are far smaller; refuse anything bigger before reading it
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Histogram:
    """A Prometheus histogram (cumulative buckets, sum, count), safe to observe from many threads."""

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.name, self.help, self.buckets = name, help_text, buckets
        self._counts = [0] * (len(buckets) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        i = bisect.bisect_left(self.buckets, seconds)
        with self._lock:
            self._counts[i] += 1
            self._sum += seconds

    def lines(self) -> list[str]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, n in zip(self.buckets, counts, strict=False):
            running += n
            out.append(f'{self.name}_bucket{{le="{bound}"}} {running}')
        running += counts[-1]
        out += [f'{self.name}_bucket{{le="+Inf"}} {running}', f"{self.name}_sum {total:.6f}",
                f"{self.name}_count {running}"]
        return out


def metrics_text(ctx: Context, ack_latency: Histogram) -> str:
    from bot.storage import runs as repo

    with ctx.db.transaction() as conn:
        counts = repo.counts_by_state(conn)
    lines = ["# HELP runbook_bot_runs Runs by state.", "# TYPE runbook_bot_runs gauge"]
    lines += [f'runbook_bot_runs{{state="{s.value}"}} {counts.get(s.value, 0)}' for s in RunState]
    lines += ["# HELP runbook_bot_approvals_pending Runs waiting for approval.",
              "# TYPE runbook_bot_approvals_pending gauge",
              f"runbook_bot_approvals_pending {counts.get(RunState.PENDING_APPROVAL.value, 0)}",
              "# HELP runbook_bot_queue_depth Approved runs waiting for a worker.",
              "# TYPE runbook_bot_queue_depth gauge",
              f"runbook_bot_queue_depth {counts.get(RunState.QUEUED.value, 0)}"]
    lines += ack_latency.lines()
    try:
        lines += scheduler_metrics(ctx)
    except Exception:
        log.exception("scheduler metrics failed")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- HTTP
class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], ctx: Context, app: App | None, ack_latency: Histogram) -> None:
        super().__init__(address, Handler)
        self.ctx, self.app, self.ack_latency = ctx, app, ack_latency


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, Any] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, values in (headers or {}).items():
            if k.lower() in ("content-length", "content-type"):
                continue
            for v in values if isinstance(values, list | tuple) else [values]:
                self.send_header(k, str(v))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/healthz":
            try:
                with self.server.ctx.db.transaction() as conn:
                    conn.execute("SELECT 1")
                self._send(200, json.dumps({"db": "ok"}).encode(), "application/json")
            except Exception as e:  # noqa: BLE001 - health is reported, not raised
                self._send(503, json.dumps({"db": f"error: {type(e).__name__}"}).encode(), "application/json")
        elif path == "/metrics":
            try:
                text = metrics_text(self.server.ctx, self.server.ack_latency)
            except Exception:
                log.exception("/metrics failed")
                self._send(500, b"metrics unavailable\n", "text/plain")
                return
            self._send(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain")

    def do_POST(self) -> None:
        started = time.perf_counter()
        split = urlsplit(self.path)
        if split.path != SLACK_PATH or self.server.app is None:
            self._send(404, b"not found\n", "text/plain")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._send(413, b"request too large\n", "text/plain")
            return
        body = self.rfile.read(length).decode("utf-8", errors="replace")
        try:
            response = dispatch(self.server.app, body, split.query, {k: v for k, v in self.headers.items()})
        except Exception:
            log.exception("Slack request failed")
            self._send(500, b"internal error\n", "text/plain")
            return
        self._send(response.status, response.body.encode(), _content_type(response.headers), response.headers)
        self.server.ack_latency.observe(time.perf_counter() - started)


def _content_type(headers: dict[str, Any]) -> str:
    for k, v in headers.items():
        if k.lower() == "content-type":
            return str(v[0] if isinstance(v, list | tuple) and v else v)
    return "text/plain;charset=utf-8"


def dispatch(app: App, body: str, query: str, headers: dict[str, str]) -> Any:
    from slack_bolt.request import BoltRequest

    return app.dispatch(BoltRequest(body=body, query=query, headers=dict(headers)))


def http_server(ctx: Context, app: App | None, port: int, ack_latency: Histogram,
                host: str | None = None) -> Server:
    host = host or os.environ.get("RUNBOOK_BOT_HTTP_HOST") or "0.0.0.0"  # noqa: S104 - Slack must reach it
    return Server((host, port), ctx, app, ack_latency)


# ----------------------------------------------------------------------------- Socket Mode
def _socket_mode_handler(app: App, app_token: str, ack_latency: Histogram) -> Any:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    class TimedHandler(SocketModeHandler):
        def handle(self, client: Any, req: SocketModeRequest) -> None:
            started = time.perf_counter()
            super().handle(client, req)
            ack_latency.observe(time.perf_counter() - started)

    return TimedHandler(app, app_token)


# ----------------------------------------------------------------------------- serve
def _install_signals(stop: threading.Event, stopped_by: list[str]) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # in-process use (tests): the caller sets `stop`

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping", signum)
        stopped_by.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def serve(ctx: Context, *, http_port: int | None = None, workers: bool = True, scheduler: bool = True,
          slack: bool = True, out: TextIO = sys.stdout, stop: threading.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or `stop` is set). Returns the exit status."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = stop or threading.Event()
    stopped_by: list[str] = []  # the signal's name: running runs are recorded "worker stopped by SIGTERM"
    _install_signals(stop, stopped_by)
    settings = ctx.settings
    ack_latency = Histogram("runbook_bot_slack_ack_seconds", "Time to acknowledge a Slack request.")
    app: App | None = None
    socket_handler: Any = None
    notifier: Any = None
    executor: ThreadPoolExecutor | None = None
    pool = None
    stop_scheduler: Callable[[], None] | None = None
    httpd: Server | None = None

    def say(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    try:
        if slack and not settings.slack_bot_token:
            say("slack: off (SLACK_BOT_TOKEN is not set)")
        elif slack:
            from bot.slack.app import approval_channel, create_app, make_client
            from bot.slack.groups import SlackGroupResolver
            from bot.slack.notifier import Notifier

            socket_mode = bool(settings.slack_app_token)
            if not socket_mode and http_port is None:
                raise ConfigError("Slack in HTTP mode needs --http PORT (or set SLACK_APP_TOKEN for Socket Mode)")
            client = make_client(settings)
            executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="runbook-slack")
            ctx.service.slack_groups = SlackGroupResolver(client)
            app = create_app(settings, ctx.service, executor=executor, socket_mode=socket_mode, client=client)
            channel = approval_channel(settings, ctx.service)
            notifier = Notifier(client, ctx.service, channel)
            notifier.subscribe()
            alert_sinks.append(notifier.alert)  # stale-drill alerts go to Slack too
            if socket_mode:
                assert settings.slack_app_token is not None
                socket_handler = _socket_mode_handler(app, settings.slack_app_token, ack_latency)
                socket_handler.connect()
                say("slack: socket mode")
            else:
                say(f"slack: http mode at {SLACK_PATH}")
            if not channel:
                say("slack: no approvals channel (channels.approvals or SLACK_APPROVAL_CHANNEL): no approval cards")
        if workers:
            pool = ctx.worker_pool()
            pool.start()
            say(f"workers: {pool.size}")
        if scheduler:
            stop_scheduler = start_scheduler(ctx)
            say("scheduler: on")
        if http_port is not None:
            httpd = http_server(ctx, app, http_port, ack_latency)
            threading.Thread(target=httpd.serve_forever, name="runbook-http", daemon=True).start()
            host, port = str(httpd.server_address[0]), int(httpd.server_address[1])
            say(f"listening on http://{host}:{port} (/healthz, /metrics{', ' + SLACK_PATH if app else ''})")
        # Stale-run recovery, expiry and Slack catch-up: every 10 s, sooner with a faster heartbeat (tests).
        interval = max(1.0, min(HOUSEKEEPING_SECONDS, settings.heartbeat_seconds * 5))
        while not stop.wait(interval):
            try:
                if pool is not None:
                    pool.housekeeping()
                if notifier is not None:
                    notifier.adopt()
            except Exception:
                log.warning("housekeeping failed; retrying", exc_info=True)
    except RunbookBotError as e:
        say(f"error: {e}")
        return 2
    finally:
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if socket_handler is not None:
            socket_handler.close()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=False)
        if stop_scheduler is not None:
            stop_scheduler()
        if pool is not None:  # ends running runs' process trees and records them interrupted
            pool.stop(why=f"worker stopped by {stopped_by[0]}" if stopped_by else "the worker stopped")
        if notifier is not None:
            sinks = getattr(sys.modules.get("bot.scheduler"), "alert_sinks", None)
            if isinstance(sinks, list) and notifier.alert in sinks:
                sinks.remove(notifier.alert)
            notifier.stop()
    say("stopped")
    return 0
