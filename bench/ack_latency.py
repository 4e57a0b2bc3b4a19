"""Slack ack latency of `runbook-bot serve --http` against a bare Bolt app whose /runbook handler only acks.

    .venv/bin/python bench/ack_latency.py [--requests 500] [--concurrency 50] [--load 8]

Both servers run as subprocesses on 127.0.0.1 behind the same HTTP front (bot.server: waitress + the
signature gate; the bare one has no replay record, serve's records each request in PostgreSQL), Slack's Web
API is the tests' fake, PostgreSQL is a throwaway cluster (or DATABASE_URL). Each phase sends N signed
`/runbook` slash commands at the given concurrency and measures the time to the HTTP answer (the ack):
`list` (answered in the ack) and `history` (acked at once, answered from the database via response_url).
Then the same again while `--load` slow playbooks run in serve's worker pool.
Goals: serve p99 <= 1.5x bare and < 100 ms idle; < 200 ms under load.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.slack_api import FakeSlack, SlackSender, signature  # noqa: E402
from tests.support.processes import stop_process  # noqa: E402

CATALOG = ROOT / "tests" / "integration" / "slack" / "catalog"
SECRET = "bench-signing-secret"


def serve_bare(api_url: str) -> None:
    """The baseline: a Bolt app with one /runbook listener that only acks, behind bot.server's HTTP front."""
    import threading as _t

    from slack_bolt import App
    from slack_sdk import WebClient

    from bot.server import MAX_CONNECTIONS, READ_TIMEOUT, Front, Histogram, HttpServer

    app = App(client=WebClient(token="xoxb-bench", base_url=api_url), signing_secret=SECRET)

    @app.command("/runbook")
    def only_ack(ack):  # type: ignore[no-untyped-def]
        ack()

    front = Front(None, app, Histogram("bare", "bare"), SECRET)
    server = HttpServer(front, "127.0.0.1", 0, read_timeout=READ_TIMEOUT, max_connections=MAX_CONNECTIONS).start()
    stop = _t.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"listening on http://127.0.0.1:{server.port}", flush=True)
    stop.wait()
    server.stop()


def serve_fake_slack() -> None:
    """The fake Web API in its own process, so its work does not share the load generator's interpreter."""
    fake = FakeSlack().start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"listening on {fake.url}", flush=True)
    stop.wait()
    fake.stop()


def server_side_p99(url: str) -> str:
    """serve's own ack histogram (time inside the server), as an upper bucket bound for p99."""
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:  # noqa: S310 - 127.0.0.1
        text = resp.read().decode()
    buckets = [(line.split('le="')[1].split('"')[0], int(line.split()[-1])) for line in text.splitlines()
               if line.startswith("runbook_bot_slack_ack_seconds_bucket")]
    total = buckets[-1][1] if buckets else 0
    for le, n in buckets:
        if total and n >= 0.99 * total:
            return f"server-side p99 <= {float(le) * 1000:.0f} ms over {total} requests (all phases)"
    return "no server-side figures"


def _start(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 90
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if line.startswith("listening on "):
            return proc, line.split()[2]
    proc.kill()
    raise SystemExit("server did not start:\n" + "".join(seen))


def measure(sender: SlackSender, n: int, concurrency: int, command: str = "list") -> list[float]:
    """Latency of n signed slash commands, `concurrency` in flight (asyncio + aiohttp: a light client)."""
    import asyncio

    import aiohttp

    bodies = [sender.command_body("U0ALICE", command)[0] for _ in range(n + 20)]

    async def run() -> list[float]:
        sem = asyncio.Semaphore(concurrency)
        conn = aiohttp.TCPConnector(limit=concurrency, force_close=True)
        async with aiohttp.ClientSession(connector=conn) as session:

            async def one(body: str) -> float:
                async with sem:
                    ts = str(int(time.time()))
                    headers = {"Content-Type": "application/x-www-form-urlencoded",
                               "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature(SECRET, ts, body)}
                    t0 = time.perf_counter()
                    async with session.post(sender.events_url, data=body.encode(), headers=headers) as resp:
                        await resp.read()
                        elapsed = time.perf_counter() - t0
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status}")
                    return elapsed

            await asyncio.gather(*(one(b) for b in bodies[:20]))  # warm up
            return list(await asyncio.gather(*(one(b) for b in bodies[20:])))

    return asyncio.run(run())


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))] * 1000


def compare(label: str, bare: SlackSender, served: SlackSender, args: argparse.Namespace, command: str,
            p99_goal_ms: float) -> None:
    """Alternate bare and serve for `--rounds` rounds (machine noise hits both alike); report per round and
    the median round."""
    rounds = []
    for _ in range(args.rounds):
        b = measure(bare, args.requests, args.concurrency, command)
        s = measure(served, args.requests, args.concurrency, command)
        rounds.append((b, s))
    print(f"\n{label}, /runbook {command}: {args.requests} requests x {args.rounds} rounds, concurrency "
          f"{args.concurrency}")
    print(f"  {'round':<7}{'bare p50':>10}{'bare p99':>10}{'serve p50':>11}{'serve p99':>11}{'p99 ratio':>11}")
    ratios = []
    for i, (b, s) in enumerate(rounds, 1):
        ratio = pct(s, 99) / pct(b, 99)
        ratios.append((ratio, pct(s, 99), pct(b, 99)))
        print(f"  {i:<7}{pct(b, 50):10.1f}{pct(b, 99):10.1f}{pct(s, 50):11.1f}{pct(s, 99):11.1f}{ratio:11.2f}")
    ratio, s99, b99 = sorted(ratios)[len(ratios) // 2]
    print(f"  median round: serve p99 {s99:.1f} ms vs bare {b99:.1f} ms, ratio {ratio:.2f} "
          f"(goals: ratio <= 1.5, serve p99 < {p99_goal_ms:.0f} ms)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3, help="alternating bare/serve rounds per phase")
    ap.add_argument("--load", type=int, default=8, help="slow playbooks running during the second phase")
    ap.add_argument("--command", action="append", default=None,
                    help="the /runbook text to send (repeatable); default: `list` (answered in the ack) and "
                         "`history` (acked, then answered from the database via response_url)")
    ap.add_argument("--serve-bare", metavar="API_URL", help=argparse.SUPPRESS)
    ap.add_argument("--serve-fake-slack", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.command = args.command or ["list", "history"]
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return 0
    if args.serve_fake_slack:
        serve_fake_slack()
        return 0

    cluster = None
    db_url = os.environ.get("DATABASE_URL")
    if not db_url:
        from tests.support.pgcluster import PgCluster, make_tmp_dir

        cluster = PgCluster(make_tmp_dir("rb-bench-pg-")).start()
        db_url = cluster.dsn()
    procs: list[subprocess.Popen[str]] = []
    fake_proc, fake_url = _start([sys.executable, __file__, "--serve-fake-slack"], dict(os.environ))
    procs.append(fake_proc)
    fake_base = fake_url.removesuffix("/api/")
    home = Path(f"/tmp/rb-bench-{uuid.uuid4().hex[:8]}")
    env = {
        **os.environ,
        "RUNBOOK_BOT_HOME": str(home), "DATABASE_URL": db_url,
        "RUNBOOK_BOT_RUNBOOKS": str(CATALOG / "runbooks"), "RUNBOOK_BOT_PLAYBOOKS": str(CATALOG / "playbooks"),
        "RUNBOOK_BOT_CONFIG": str(CATALOG / "operators.yaml"),
        "RUNBOOK_BOT_INVENTORY": str(ROOT / "inventory" / "local"),
        "RUNBOOK_BOT_SECRET_KEY": "bench-" + uuid.uuid4().hex, "RUNBOOK_BOT_WORKERS": str(max(args.load, 2)),
        "RUNBOOK_BOT_HTTP_HOST": "127.0.0.1", "SLACK_BOT_TOKEN": "xoxb-bench", "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": fake_url, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
    }
    env.pop("SLACK_APP_TOKEN", None)
    try:
        bare_proc, bare_url = _start([sys.executable, __file__, "--serve-bare", fake_url], env)
        procs.append(bare_proc)
        serve_proc, serve_url = _start(["runbook-bot", "serve", "--http", "0", "--no-scheduler"], env)
        procs.append(serve_proc)
        bare = SlackSender(bare_url + "/slack/events", SECRET, fake_base)
        served = SlackSender(serve_url + "/slack/events", SECRET, fake_base)
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")

        for command in args.command:
            compare("idle", bare, served, args, command, 100)

        if args.load:
            import psycopg

            for i in range(args.load):
                served.command("U0ALICE", f"run slow target=load-{i} pause=120")
            deadline = time.monotonic() + 120
            running = 0
            while time.monotonic() < deadline:
                with psycopg.connect(db_url) as conn:
                    row = conn.execute("SELECT count(*) FROM runs WHERE state = 'running'").fetchone()
                running = int(row[0]) if row else 0
                if running >= args.load:
                    break
                time.sleep(0.5)
            print(f"\n{running} slow playbooks running")
            for command in args.command:
                compare(f"under load ({running} playbooks running)", bare, served, args, command, 200)
        print("\n" + server_side_p99(serve_url))
    finally:
        for p in reversed(procs):
            stop_process(p)
        if cluster is not None:
            cluster.stop("immediate")
        subprocess.run(["rm", "-rf", str(home)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
