"""`runbook-bot serve`: one process runs Slack, the worker pool, the scheduler, `/healthz` and `/metrics`.

Slack arrives over Socket Mode when SLACK_APP_TOKEN is set (no public URL), otherwise as HTTP POSTs to
`/slack/events` on `--http PORT`. HTTP is served by waitress (a maintained WSGI server): one event loop
reads every request whole before one of HTTP_THREADS threads answers it, so half-sent requests hold no
thread; a connection must deliver its whole request within READ_TIMEOUT seconds; at most MAX_CONNECTIONS
are open; bodies over MAX_BODY are refused unread. In front of Bolt (`Front`), a Slack request's signature
and timestamp are checked on the raw bytes before anything parses it (401/400, one log line), Slack's
retries and replays of a request already taken (recorded in PostgreSQL: shared by replicas) get a 200 that
does nothing. Binds 127.0.0.1 unless RUNBOOK_BOT_HTTP_HOST says otherwise. SIGTERM/SIGINT stop it
gracefully: stop taking requests, finish the Slack work in flight, stop the workers, flush Slack
notifications. What one process runs (`ServeProcess`) is built by bot.composition; `serve` starts it,
runs housekeeping and stops it.
"""
from __future__ import annotations

import bisect
import errno
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer

from bot.domain.runs import RunState
from bot.errors import ConfigError, RunbookBotError
from bot.execution.worker import WorkerPool
from bot.scheduler import SchedulerHandle
from bot.scheduler import metrics as scheduler_metrics
from bot.spine import Spine

if TYPE_CHECKING:
    from slack_bolt import App
    from slack_sdk.socket_mode.request import SocketModeRequest

    from bot.slack.notifier import Notifier

log = logging.getLogger(__name__)

SLACK_PATH = "/slack/events"
HOUSEKEEPING_SECONDS = 10.0
DEFAULT_HOST = "127.0.0.1"  # RUNBOOK_BOT_HTTP_HOST=0.0.0.0 to take Slack's HTTP requests from an ingress
MAX_BODY = 1 << 20  # Slack payloads are far smaller; waitress refuses anything bigger (413) unread
MAX_HEADERS = 64 << 10
READ_TIMEOUT = 10  # seconds for a connection to deliver a whole request (RUNBOOK_BOT_HTTP_READ_TIMEOUT)
MAX_CONNECTIONS = 1000  # open connections at once; more wait in the backlog (RUNBOOK_BOT_HTTP_MAX_CONNECTIONS)
HTTP_THREADS = 8  # threads that answer complete requests (Slack's ack, /healthz, /metrics)
LOOP_SECONDS = 0.5
DRAIN_SECONDS = 5.0
SLACK_PLAN_THREADS = 4  # check modes of /runbook run and the run modal
SLACK_QUICK_THREADS = 4  # approve/deny clicks, cancel, status, list, history
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


def metrics_text(spine: Spine, ack_latency: Histogram) -> str:
    from bot.storage import runs as repo

    with spine.db.transaction() as conn:
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
    if spine.service.anchors is not None:
        lines += spine.service.anchors.metrics()
    try:
        lines += scheduler_metrics(spine)
    except Exception:
        log.exception("scheduler metrics failed")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- HTTP
def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < 1:
        raise ConfigError(f"{name}={raw!r} must be at least 1")
    return value


def _json(status: int, doc: dict[str, Any]) -> tuple[int, bytes, str]:
    return status, json.dumps(doc).encode(), "application/json"


def _text(status: int, text: str) -> tuple[int, bytes, str]:
    return status, text.encode(), "text/plain; charset=utf-8"


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Server Error", 503: "Service Unavailable"}


class Front:
    """The WSGI application waitress serves: GET /healthz, GET /metrics, POST /slack/events.

    A Slack request is refused before anything parses it unless its signature and timestamp check out
    (bot.slack.requests); Slack's retries and replays of a request already taken (recorded in
    PostgreSQL, so shared by replicas) are answered 200 without effect; only then does Bolt see it.
    `spine` None (the ack benchmark's baseline): no health, metrics or replay record. `app` None: no
    Slack requests (404), as for the scheduler process and Socket Mode.
    """

    def __init__(self, spine: Spine | None, app: App | None, ack_latency: Histogram, signing_secret: str) -> None:
        self.spine, self.app, self.ack_latency, self.secret = spine, app, ack_latency, signing_secret

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        method, path = str(environ.get("REQUEST_METHOD", "")), str(environ.get("PATH_INFO", ""))
        extra: dict[str, Any] = {}
        if method in ("GET", "HEAD"):
            status, body, ctype = self._get(path)
        elif method == "POST":
            status, body, ctype, extra = self._post(path, environ)
        else:
            status, body, ctype = _text(405, "method not allowed\n")
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
        for k, values in extra.items():
            if k.lower() not in ("content-length", "content-type"):
                headers += [(k, str(v)) for v in (values if isinstance(values, list | tuple) else [values])]
        start_response(f"{status} {_REASONS.get(status, 'Status')}", headers)
        return [b"" if method == "HEAD" else body]

    def _get(self, path: str) -> tuple[int, bytes, str]:
        if self.spine is None or path not in ("/healthz", "/metrics"):
            return _text(404, "not found\n")
        if path == "/healthz":
            try:
                with self.spine.db.transaction(timeout=5) as conn:
                    conn.execute("SELECT 1")
                return _json(200, {"db": "ok"})
            except Exception as e:  # noqa: BLE001 - health is reported, not raised
                return _json(503, {"db": f"error: {type(e).__name__}"})
        try:
            text = metrics_text(self.spine, self.ack_latency)
        except Exception:
            log.exception("/metrics failed")
            return _text(500, "metrics unavailable\n")
        return 200, text.encode(), "text/plain; version=0.0.4; charset=utf-8"

    def _post(self, path: str, environ: dict[str, Any]) -> tuple[int, bytes, str, dict[str, Any]]:
        from slack_bolt.request import BoltRequest

        from bot.slack.requests import Refusal, check_signature, is_retry

        started = time.perf_counter()
        if path != SLACK_PATH or self.app is None:
            return (*_text(404, "not found\n"), {})
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return (*_text(400, "bad Content-Length\n"), {})
        raw = environ["wsgi.input"].read(length) if length > 0 else b""  # waitress has read it all (bounded)
        headers = {k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = str(environ["CONTENT_TYPE"])
        peer = environ.get("REMOTE_ADDR", "?")
        signed = check_signature(self.secret, headers, raw, time.time())
        if isinstance(signed, Refusal):
            log.warning("refused a Slack request from %s: %s", peer, signed.reason)
            return (*_text(signed.status, signed.reason + "\n"), {})
        if is_retry(headers):
            log.info("Slack retry %s (%s) answered without effect", headers.get("x-slack-retry-num", "?"),
                     headers.get("x-slack-retry-reason", "?"))
            return (*_text(200, ""), {"X-Slack-No-Retry": "1"})
        if self.spine is not None:
            from bot.storage.slack_requests import first_sighting

            try:
                with self.spine.db.transaction(timeout=2) as conn:
                    first = first_sighting(conn, signed.timestamp, signed.signature)
            except RunbookBotError as e:
                log.warning("Slack request refused: cannot record it against replays (%s)", e)
                return (*_text(503, "database unavailable\n"), {})
            if not first:
                log.warning("replayed Slack request from %s (timestamp %s) answered without effect", peer,
                            signed.timestamp)
                return (*_text(200, ""), {})
        try:
            bolt_headers: dict[str, str | Sequence[str]] = dict(headers)
            request = BoltRequest(body=raw.decode("utf-8"), query=str(environ.get("QUERY_STRING", "")),
                                  headers=bolt_headers)
        except (ValueError, TypeError, KeyError, AttributeError) as e:  # a signed body that is not Slack's
            log.warning("malformed Slack request from %s: %s", peer, type(e).__name__)
            return (*_text(400, "malformed request\n"), {})
        try:
            response = self.app.dispatch(request)
        except Exception:
            log.exception("Slack request failed")
            return (*_text(500, "internal error\n"), {})
        self.ack_latency.observe(time.perf_counter() - started)
        return response.status, response.body.encode(), _content_type(response.headers), dict(response.headers)


def _content_type(headers: dict[str, Any]) -> str:
    for k, v in headers.items():
        if k.lower() == "content-type":
            return str(v[0] if isinstance(v, list | tuple) and v else v)
    return "text/plain;charset=utf-8"


class _Channel(HTTPChannel):
    """waitress's channel, remembering when the request it is reading began (see _Waitress)."""

    request_started = 0.0

    def received(self, data: bytes) -> bool:
        before = self.request
        result: bool = super().received(data)
        if self.request is None:
            self.request_started = 0.0
        elif self.request is not before:
            self.request_started = time.time()
        return result


class _Waitress(TcpWSGIServer):
    """waitress closes a connection idle for channel_timeout, but a client that trickles a byte now and
    then is never idle: also close any connection whose request (headers + body) has not fully arrived
    within channel_timeout of its first byte."""

    channel_class = _Channel

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # type: ignore[arg-type]  # types-waitress says int: it is time.time()
        cutoff = now - self.adj.channel_timeout
        channels: dict[int, Any] = self.active_channels  # type: ignore[assignment]  # types-waitress: a dict
        for channel in list(channels.values()):
            started = getattr(channel, "request_started", 0.0)
            if channel.request is not None and not channel.requests and started and started < cutoff:
                channel.will_close = True


class HttpServer:
    """waitress behind `Front`: every request is read whole by one event loop before a thread sees it, so
    slow or half-sent requests hold no thread; each connection must finish its request within
    `read_timeout` (idle or not), at most `max_connections` are open at once, bodies are bounded."""

    def __init__(self, front: Front, host: str, port: int, *, read_timeout: int, max_connections: int,
                 threads: int = HTTP_THREADS) -> None:
        self._map: dict[int, Any] = {}
        adj = Adjustments(
            host=host, port=port, threads=threads, connection_limit=max_connections,
            channel_timeout=read_timeout, cleanup_interval=1, asyncore_use_poll=True,  # poll: > 1024 fds
            asyncore_loop_timeout=1, max_request_body_size=MAX_BODY, max_request_header_size=MAX_HEADERS,
            expose_tracebacks=False, ident="runbook-bot", clear_untrusted_proxy_headers=True,
        )
        self.front, self.read_timeout, self.max_connections = front, read_timeout, max_connections
        try:
            sockinfo: Any = adj.listen[0]  # types-waitress says str: it is getaddrinfo's tuple
            self._server = _Waitress(front, self._map, dispatcher=None, adj=adj, sockinfo=sockinfo)
        except OSError as e:
            wasyncore.close_all(self._map)
            if e.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {host} is in use (another runbook-bot serve?): stop it or use "
                                  "--http PORT / HTTP_PORT=...") from None
            raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        bound: Any = self._server  # effective_host/port are set by waitress (not in types-waitress)
        self.host, self.port = str(bound.effective_host), int(bound.effective_port)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="runbook-http", daemon=True)

    def start(self) -> HttpServer:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            wasyncore.loop(timeout=LOOP_SECONDS, use_poll=True, map=self._map, count=1)
        # Stop taking connections, let the requests in flight be answered (bounded), then close the rest.
        wasyncore.dispatcher.close(self._server)
        deadline = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < deadline and any(getattr(ch, "requests", None) or getattr(ch, "total_outbufs_len", 0)
                                                 for ch in list(self._map.values())):
            wasyncore.loop(timeout=LOOP_SECONDS, use_poll=True, map=self._map, count=1)
        wasyncore.close_all(self._map)
        self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=int(DRAIN_SECONDS))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(DRAIN_SECONDS * 3)
        elif self._thread.ident is None:  # bound but never started: release the port
            wasyncore.close_all(self._map)


def http_server(spine: Spine, app: App | None, port: int, ack_latency: Histogram,
                host: str | None = None) -> HttpServer:
    """Not started yet (`.start()`); binds now, so a port in use is a one-line ConfigError.

    Binds 127.0.0.1 unless RUNBOOK_BOT_HTTP_HOST says otherwise (0.0.0.0 for Slack's HTTP mode behind an
    ingress or load balancer)."""
    host = host or os.environ.get("RUNBOOK_BOT_HTTP_HOST") or DEFAULT_HOST
    front = Front(spine, app, ack_latency, spine.settings.slack_signing_secret or "")
    return HttpServer(front, host, port, read_timeout=_env_int("RUNBOOK_BOT_HTTP_READ_TIMEOUT", READ_TIMEOUT),
                      max_connections=_env_int("RUNBOOK_BOT_HTTP_MAX_CONNECTIONS", MAX_CONNECTIONS))


# ----------------------------------------------------------------------------- Socket Mode
def socket_mode_handler(app: App, app_token: str, ack_latency: Histogram) -> Any:
    """Bolt's Socket Mode handler (not connected yet), timing each request's acknowledgement."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    class TimedHandler(SocketModeHandler):
        def handle(self, client: Any, req: SocketModeRequest) -> None:
            started = time.perf_counter()
            super().handle(client, req)
            ack_latency.observe(time.perf_counter() - started)

    return TimedHandler(app, app_token)


# ----------------------------------------------------------------------------- serve
@dataclass
class SlackFront:
    """Slack as `serve` runs it: the Bolt app (behind `Front` in HTTP mode, or reached through
    `socket_handler` in Socket Mode), the notifier that posts cards and progress, and the listener lanes."""

    app: App
    notifier: Notifier
    approval_channel: str | None
    lanes: list[ThreadPoolExecutor]
    socket_handler: Any | None = None  # Socket Mode: connects out when serve starts


@dataclass
class ServeProcess:
    """Everything one `serve` or `scheduler` process runs, built (not started) by bot.composition."""

    spine: Spine
    ack_latency: Histogram
    http: HttpServer | None = None  # bound, not started
    slack: SlackFront | None = None
    slack_off: str | None = None  # why Slack is off although it was asked for (said at start)
    pool: WorkerPool | None = None
    start_scheduler: Callable[[], SchedulerHandle] | None = None

    def close(self) -> None:
        """After `serve` returned (or instead of it): release the HTTP port and the database pool."""
        if self.http is not None:
            self.http.stop()
        self.spine.close()


def _install_signals(stop: threading.Event, stopped_by: list[str]) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # in-process use (tests): the caller sets `stop`

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping", signum)
        stopped_by.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def serve(process: ServeProcess, *, out: TextIO = sys.stdout, stop: threading.Event | None = None) -> int:
    """Start what `process` holds, run until SIGTERM/SIGINT (or `stop` is set), then stop it all. Returns the
    exit status: 2 with one line on stderr (`runbook-bot: error: ...`) when it cannot start."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = stop or threading.Event()
    stopped_by: list[str] = []  # the signal's name: running runs are recorded "worker stopped by SIGTERM"
    _install_signals(stop, stopped_by)
    spine, slack, pool, httpd = process.spine, process.slack, process.pool, process.http
    notifying = False
    scheduler: SchedulerHandle | None = None
    pool_started = False

    def say(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    try:
        if process.slack_off:
            say(f"slack: off ({process.slack_off})")
        if slack is not None:
            slack.notifier.subscribe()
            notifying = True
            if slack.socket_handler is not None:
                slack.socket_handler.connect()
                say("slack: socket mode")
            else:
                say(f"slack: http mode at {SLACK_PATH}")
            if not slack.approval_channel:
                say("slack: no approvals channel (channels.approvals or SLACK_APPROVAL_CHANNEL): no approval cards")
        if pool is not None:
            pool.start()
            pool_started = True
            say(f"workers: {pool.size}")
        if process.start_scheduler is not None:
            scheduler = process.start_scheduler()
            say("scheduler: on")
        if httpd is not None:
            httpd.start()
            paths = "/healthz, /metrics" + (f", {SLACK_PATH}" if httpd.front.app is not None else "")
            say(f"listening on http://{httpd.host}:{httpd.port} ({paths})")
        # Stale-run recovery, expiry and Slack catch-up: every 10 s, sooner with a faster heartbeat (tests).
        interval = max(1.0, min(HOUSEKEEPING_SECONDS, spine.settings.heartbeat_seconds * 5))
        while not stop.wait(interval):
            try:
                if pool is not None:
                    pool.housekeeping()
                if notifying and slack is not None:
                    slack.notifier.adopt()
                if httpd is not None and httpd.front.app is not None:
                    _forget_seen_requests(spine)
            except Exception:
                log.warning("housekeeping failed; retrying", exc_info=True)
    except RunbookBotError as e:
        sys.stderr.write(f"runbook-bot: error: {e}\n")
        sys.stderr.flush()
        return 2
    finally:
        if httpd is not None:
            httpd.stop()
        if slack is not None:
            if slack.socket_handler is not None:
                slack.socket_handler.close()
            for lane in slack.lanes:
                lane.shutdown(wait=True, cancel_futures=False)
        if scheduler is not None:
            scheduler.stop()
        if pool is not None and pool_started:  # ends running runs' process trees and records them interrupted
            pool.stop(why=f"worker stopped by {stopped_by[0]}" if stopped_by else "the worker stopped")
        if notifying and slack is not None:
            slack.notifier.stop()
    say("stopped")
    return 0


def _forget_seen_requests(spine: Spine) -> None:
    from bot.storage.slack_requests import forget_expired

    with spine.db.transaction() as conn:
        forget_expired(conn, time.time())
