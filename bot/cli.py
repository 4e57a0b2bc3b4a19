"""The `runbook-bot` command: the spine served from a terminal (for when Slack is down).

Identity is the OS login name (getpass.getuser()), mapped through the operators file.
Exit codes: 0 ok, 1 audit chain broken / run did not succeed (with --wait), 2 a user error (one line),
including a wrong argument and an OSError (unwritable RUNBOOK_BOT_HOME, full disk: the line names the path).
Output into a closed pipe (`runbook-bot audit export | head`) ends quietly.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from bot.composition import WorkerProcess, build_cli, build_scheduler, build_serve, build_worker
from bot.config import Settings
from bot.domain.ids import RunId, parse_run_id
from bot.domain.params import parse_assignments, validate_params
from bot.domain.policy import Operator, check_quorum_reachable, check_request, groups_named
from bot.domain.runs import RunState
from bot.domain.text import check_free_text, visible
from bot.errors import CatalogError, ConfigError, RunbookBotError
from bot.execution.runner import PROGRESS_FILE
from bot.spine import Spine
from bot.storage import audit
from bot.text_views import approval_status, params_text, run_json, run_text, runbook_json, runbook_text

if TYPE_CHECKING:
    from bot.server import ServeProcess

log = logging.getLogger("runbook-bot")
MAX_LIMIT = 1000


class _Parser(argparse.ArgumentParser):
    """argparse with the house rule for user errors: one line on stderr, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"runbook-bot: error: {message} (see `{self.prog} --help`)\n")


def _run_id(text: str) -> RunId:
    run_id = parse_run_id(text)
    if run_id is None:
        raise argparse.ArgumentTypeError(f"expected a run id (a number such as 12), got {visible(text)!r}")
    return run_id


def _count(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = parse_run_id(text) if not text.startswith("#") else None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected a whole number from {low} to {high}, got {visible(text)!r}")
        return int(value)

    parse.__name__ = "number"
    return parse


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="runbook-bot", description="Approved, audited runbooks for on-call engineers.")
    p.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    s = sub.add_parser("init", help="write a starter operators file naming you (if none exists)")
    s.add_argument("--force", action="store_true", help="overwrite an existing file")

    s = sub.add_parser("runbooks", help="list the runbooks you may request")
    s.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.add_argument("--all", action="store_true", help="include runbooks you may not request")

    s = sub.add_parser("show", help="show a runbook: parameters, approval policy, guide text")
    s.add_argument("name", help="the runbook's name (see `runbook-bot runbooks`)")
    s.add_argument("--json", action="store_true", help="print JSON instead of text")

    s = sub.add_parser("request", help="request a run: NAME key=value ...")
    s.add_argument("name", help="the runbook's name (see `runbook-bot runbooks`)")
    s.add_argument("params", nargs="*", metavar="key=value", help="parameter values (see `runbook-bot show NAME`)")
    s.add_argument("--reason", default="", metavar="TEXT",
                   help="why (an incident or ticket id): shown to approvers and kept in the audit trail; one line")
    s.add_argument("--json", action="store_true", help="print the new run as JSON instead of its id")

    for verb in ("approve", "deny"):
        s = sub.add_parser(verb, help=f"{verb} a pending run")
        s.add_argument("run_id", type=_run_id, help="the run's id")
        s.add_argument("--comment", default="", metavar="TEXT",
                       help="a note with your decision: shown on the card and kept in the audit trail; one line")

    s = sub.add_parser("status", help="show one run")
    s.add_argument("run_id", type=_run_id, help="the run's id")
    s.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.add_argument("--follow", "-f", action="store_true",
                   help="print state changes and task lines until the run ends (exit 0 only if it succeeded)")
    s.add_argument("--output", action="store_true",
                   help="also print the playbook's full (redacted) output, when its artifacts are on this host")

    s = sub.add_parser("runs", help="list recent runs")
    s.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.add_argument("--runbook", metavar="NAME", help="only runs of this runbook")
    s.add_argument("--state", action="append", choices=[st.value for st in RunState],
                   help="only runs in this state (repeat for several)")
    s.add_argument("--limit", type=_count(1, MAX_LIMIT), default=30, metavar="N",
                   help=f"show at most N runs, newest first (1 to {MAX_LIMIT}; default 30)")

    s = sub.add_parser("cancel", help="cancel a pending, queued or running run")
    s.add_argument("run_id", type=_run_id, help="the run's id")

    s = sub.add_parser("worker", help="execute queued runs")
    s.add_argument("--once", action="store_true", help="drain the queue, then exit")
    s.add_argument("--concurrency", type=_count(1, 64), default=None, metavar="N",
                   help="run up to N playbooks at once (default RUNBOOK_BOT_WORKERS, else 2)")

    s = sub.add_parser("serve", help="Slack + workers + scheduler + /healthz and /metrics")
    s.add_argument("--http", type=int, default=None, metavar="PORT",
                   help="HTTP port for Slack events (when not in Socket Mode), /healthz and /metrics")
    s.add_argument("--no-workers", action="store_true")
    s.add_argument("--no-scheduler", action="store_true")

    s = sub.add_parser("audit", help="verify or export the audit trail")
    a = s.add_subparsers(dest="audit_verb", required=True)
    v = a.add_parser("verify", help="recompute the hash chain (exit 1 when broken)")
    v.add_argument("--json", action="store_true", help="print JSON instead of text")
    e = a.add_parser("export", help="write every event as JSON lines")
    e.add_argument("--output", "-o", default="-", metavar="FILE", help="write to FILE (default: standard output)")

    s = sub.add_parser("scheduler", help="run scheduled runbooks (standalone)")
    s.add_argument("--http", type=int, default=None, metavar="PORT", help="HTTP port for /healthz and /metrics")

    s = sub.add_parser("db", help="the embedded PostgreSQL (used when DATABASE_URL is unset): where, start, stop")
    d = s.add_subparsers(dest="db_verb", required=True, metavar="DB_VERB")
    d.add_parser("status", help="where the embedded database lives and whether it runs (starts nothing)")
    d.add_parser("start", help="start it if it is not running, then say where it lives")
    d.add_parser("stop", help="stop it (it outlives every command; the next command starts it again)")

    s = sub.add_parser("demo", help="a real pgBackRest stanza on this machine to try restore-drill on (README tour)")
    d = s.add_subparsers(dest="demo_verb", required=True, metavar="DEMO_VERB")
    d.add_parser("up", help="create stanza `demo`: a small PostgreSQL 15, one full backup (then stopped)")
    d.add_parser("down", help="stop anything of the demo that still runs and remove it")
    d.add_parser("status", help="say whether the demo is set up and where")

    s = sub.add_parser("specs", help="compare playbooks/argument_specs with the runbook front matter (exit 1 on drift)")
    s.add_argument("--write", action="store_true", help="rewrite the argument spec files that drifted")
    s = sub.add_parser("drills", help="restore drill history (RTO, RPO, result)")
    s.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.add_argument("--chart", default=None, metavar="PNG",
                   help="write the RTO trend as a PNG to this file (default RUNBOOK_BOT_HOME/drills/rto-trend.png)")
    return p


def _init_needs(settings: Settings) -> tuple[list[str], int]:
    """(groups the catalog's approvers and requesters name, approvers needed besides the requester) for
    `init`. CatalogError when the catalog cannot be read: the file would name the wrong groups."""
    from bot.catalog_files import load_catalog

    try:
        catalog = load_catalog(settings.runbooks_dir, settings.playbooks_dir)
    except CatalogError as e:
        where = f" ({settings.project_search})" if settings.project_search else ""
        raise ConfigError(f"{e}{where}: `init` names the groups the runbooks use, so it reads them first: run "
                          "from the project directory or set RUNBOOK_BOT_RUNBOOKS; nothing was written") from None
    need = max((rb.approval.required for rb in catalog if not rb.approval.allow_self), default=1)
    return groups_named(catalog), max(need, 1)


def _cmd_specs(settings: Settings, write: bool, out: TextIO) -> int:
    """Print how the argument specs differ from what the front matter says (exit 1), or --write them."""
    from bot import specs
    from bot.catalog_files import load_catalog
    files = specs.spec_files(load_catalog(settings.runbooks_dir, settings.playbooks_dir), settings.playbooks_dir)
    if write:
        for path in specs.write(files):
            out.write(f"wrote {path}\n")
        return 0
    drifted = [f for f in files if f.drifted]
    for f in drifted:
        out.write(f.diff())
    if drifted:
        out.write(f"{len(drifted)} argument spec file(s) differ from the front matter:"
                  " run `runbook-bot specs --write`\n")
        return 1
    out.write(f"{len(files)} argument spec files match the front matter\n")
    return 0


def _cmd_init(settings: Settings, force: bool, out: TextIO) -> int:
    """A starter operators file: you in every group the catalog names, and enough placeholder colleagues
    that every runbook's approval count can be reached by people other than the requester."""
    path = settings.config_file
    if path.exists() and not force:
        out.write(f"{path} exists; leaving it alone (use --force to overwrite)\n")
        return 0
    me = getpass.getuser()
    groups, need = _init_needs(settings)
    ordinals = ("second", "third", "fourth", "fifth", "sixth")  # the README's tour uses second-approver
    others = [f"{ordinals[i]}-approver" if i < len(ordinals) else f"approver-{i + 2}" for i in range(need)]
    members = ", ".join([me, *others])
    path.write_text(
        "# Operators file: who is who (see README, 'Operators file'). Written by `runbook-bot init`.\n"
        "operators:            # operator name = OS login name (the CLI identity)\n"
        f"  {me}: {{}}           # add `slack: U...` to approve from Slack\n"
        + "".join(f"  {o}: {{}}  # a placeholder: rename to a colleague's login name\n" for o in others)
        + f"# Approvals need people other than the requester: {need} placeholder(s), because a runbook needs "
        f"{need} approval(s).\n"
        + ("groups:\n" + "".join(f"  {g}: [{members}]\n" for g in groups) if groups else "groups: {}\n")
        + "channels: {}          # approvals: C0..., drills: C0... (Slack channel ids)\n"
    )
    where = f"in groups {', '.join(groups)}" if groups else "(the runbooks name no groups)"
    out.write(f"wrote {path} with you ({me}) as an operator {where}, and {need} placeholder "
              f"approver(s) ({', '.join(others)}): rename them to your colleagues\n")
    return 0


def _cmd_db(settings: Settings, verb: str, out: TextIO) -> int:
    """The embedded PostgreSQL: status / start / stop, without loading the catalog."""
    from bot.storage.database import embedded_database_url, embedded_status, redact_url, stop_embedded

    if settings.database_url:
        out.write(f"DATABASE_URL is set ({redact_url(settings.database_url)}): the embedded database is not used\n")
        return 0
    home = settings.home
    if verb == "stop":
        where = embedded_status(home).pgdata
        if stop_embedded(home):
            out.write(f"stopped the embedded PostgreSQL (data {where}); the next runbook-bot command starts it\n")
        else:
            out.write(f"the embedded PostgreSQL is not running (data {where})\n")
        return 0
    if verb == "start":
        embedded_database_url(home)
    st = embedded_status(home)
    if st.pid is not None:
        out.write(f"embedded PostgreSQL: running (pid {st.pid}), data {st.pgdata}, socket {st.socket_dir}; "
                  "it keeps running after this command: stop it with `runbook-bot db stop`\n")
    else:
        made = "" if st.initialised else ", not created yet"
        out.write(f"embedded PostgreSQL: not running (data {st.pgdata}{made}); the next runbook-bot command "
                  "starts it\n")
    return 0


def _me(spine: Spine) -> Operator:
    return spine.service.directory.operator(getpass.getuser())


def _print_json(value: Any, out: TextIO) -> None:
    out.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def _cmd_runbooks(spine: Spine, args: argparse.Namespace, out: TextIO) -> int:
    books = list(spine.service.catalog) if args.all else spine.service.requestable(_me(spine))
    if args.json:
        _print_json([runbook_json(rb) for rb in books], out)
        return 0
    width = max((len(rb.name) for rb in books), default=0)
    for rb in books:
        need = f"{rb.approval.required} approval{'s' if rb.approval.required != 1 else ''}"
        out.write(f"{rb.name.ljust(width)}  {rb.title}  [{need}]\n")
    if not books:
        out.write("no runbooks you may request (see `runbook-bot runbooks --all`)\n")
    return 0


def _cmd_show(spine: Spine, args: argparse.Namespace, out: TextIO) -> int:
    rb = spine.service.runbook(args.name)
    if args.json:
        _print_json({**runbook_json(rb), "guide": rb.guide}, out)
        return 0
    out.write("\n".join(runbook_text(rb)) + "\n\n" + rb.guide + "\n")
    return 0


def _cmd_request(spine: Spine, args: argparse.Namespace, out: TextIO) -> int:
    me = _me(spine)
    check_free_text("reason", args.reason)
    raw = parse_assignments(args.params)
    rb = spine.service.runbook(args.name)
    # Everything that can be refused without the plan is checked before the (slow) check mode starts.
    check_request(spine.service.directory, rb, me, spine.service.slack_groups)
    check_quorum_reachable(spine.service.directory, rb, me)
    validate_params(rb, raw)
    if rb.check_mode:
        sys.stderr.write(f"computing the plan for {rb.name} (check mode)...\n")
    res = spine.service.request(args.name, raw, me, reason=args.reason, source="cli")
    run = res.run
    if args.json:
        _print_json(run_json(run), out)
        return 0
    out.write(f"{run.id}\n")
    sys.stderr.write(f"run {run.id} requested: {rb.name} ({rb.title})\n")
    sys.stderr.write(f"  parameters: {params_text(run.params)}\n")
    sys.stderr.write(f"  plan hash: {run.plan_hash[:12]}\n")
    for line in res.plan.check_output or []:
        sys.stderr.write(f"  plan: {visible(line)}\n")
    if rb.warning:
        sys.stderr.write(f"  WARNING: {rb.warning}\n")
    if run.state is RunState.PENDING_APPROVAL:
        sys.stderr.write(f"  needs {run.approvals_required} approval(s) from {', '.join(rb.approval.approvers)}"
                         f" before {run.expires_at:%Y-%m-%d %H:%M %Z}: runbook-bot approve {run.id}\n")
    else:
        sys.stderr.write("  queued: a worker will run it (runbook-bot worker)\n")
    return 0


def _cmd_decide(spine: Spine, args: argparse.Namespace, out: TextIO) -> int:
    me = _me(spine)
    if args.verb == "approve":
        run = spine.service.approve(args.run_id, me, args.comment)
        state = "queued: a worker will run it" if run.state is RunState.QUEUED else approval_status(run)
        out.write(f"run {run.id} approved by {me.name}; {state}\n")
    else:
        run = spine.service.deny(args.run_id, me, args.comment)
        out.write(f"run {run.id} denied by {me.name}\n")
    return 0


def _follow(spine: Spine, run_id: int, out: TextIO, poll: float = 1.0) -> int:
    """Follow a run executed by any worker: state changes from the database, task lines from its
    artifacts when the worker shares this machine's RUNBOOK_BOT_HOME."""
    import time

    run_dir = spine.settings.artifacts_dir / str(run_id)
    progress, stdout = run_dir / PROGRESS_FILE, run_dir / "stdout.txt"
    state, offset = None, 0
    while True:
        run = spine.service.get(run_id)
        if run.state is not state:
            state = run.state
            out.write(f"[run {run.id}] {state.value}" + (f" ({approval_status(run)})" if not state.terminal else "")
                      + "\n")
        # The worker's progress lines (bot-internal tasks left out); stdout.txt from workers that write none.
        source = progress if progress.exists() else stdout
        if source.exists():
            with open(source, encoding="utf-8", errors="replace") as f:
                f.seek(offset)
                chunk = f.read()
                offset = f.tell()
            for line in chunk.splitlines():
                if source is progress or line.startswith(("TASK [", "fatal:", "changed:", "PLAY [")):
                    out.write(f"[run {run.id}] {visible(line.rstrip(' *'))}\n")
        out.flush()
        if state.terminal:
            out.write("\n".join(run_text(run)) + "\n")
            return 0 if state is RunState.SUCCEEDED else 1
        time.sleep(poll)


def _cmd_status(spine: Spine, args: argparse.Namespace, out: TextIO) -> int:
    if args.follow:
        return _follow(spine, args.run_id, out)
    run = spine.service.get(args.run_id)
    if args.json:
        _print_json(run_json(run), out)
    else:
        out.write("\n".join(run_text(run)) + "\n")
    if args.output:
        stdout = spine.settings.artifacts_dir / str(run.id) / "stdout.txt"
        if not stdout.exists():
            sys.stderr.write(f"no output for run {run.id} under {spine.settings.artifacts_dir} (it ran on another "
                             "host, or has not started)\n")
            return 1
        out.write(stdout.read_text(encoding="utf-8", errors="replace"))
    return 0


def _cmd_runs(spine: Spine, args: argparse.Namespace, out: TextIO) -> int:
    states = [RunState(s) for s in args.state] if args.state else None
    runs = spine.service.runs(limit=args.limit, runbook=args.runbook, states=states)
    if args.json:
        _print_json([run_json(r) for r in runs], out)
        return 0
    for r in runs:
        out.write(f"{r.id:>6}  {r.created_at:%Y-%m-%d %H:%M}  {r.state.value:<16} {r.runbook:<24} "
                  f"{visible(r.requested_by):<12} {params_text(r.params)}\n")
    if not runs:
        filtered = args.runbook or args.state
        out.write("no runs match (try without --runbook/--state)\n" if filtered
                  else "no runs yet: request one with `runbook-bot request NAME key=value ...`\n")
    return 0


def _cmd_cancel(spine: Spine, args: argparse.Namespace, out: TextIO) -> int:
    run = spine.service.cancel(args.run_id, _me(spine))
    if run.state is RunState.RUNNING:
        out.write(f"run {run.id}: cancel requested; the worker stops the playbook within seconds\n")
    else:
        out.write(f"run {run.id} cancelled\n")
    return 0


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        sys.stderr.write(f"runbook-bot: warning: {warning}\n")


def _cmd_worker(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    worker = build_worker(settings, concurrency=args.concurrency, out=out)
    try:
        _warn(worker.spine.warnings)
        return _work(worker, args.once, out)
    finally:
        worker.close()


def _work(worker: WorkerProcess, once: bool, out: TextIO) -> int:
    """Drain the queue (`once`), or execute queued runs until SIGTERM/SIGINT."""
    pool, settings = worker.pool, worker.spine.settings
    stop = threading.Event()
    stopped_by: list[str] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopped_by.append(signal.Signals(signum).name)
        stop.set()
        if once:
            pool.interrupt(f"worker stopped by {stopped_by[0]}")

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    if once:
        finished = pool.run_once()
        out.write(f"worker: {len(finished)} run(s) finished\n")
        return 0
    pool.start()
    out.write(f"worker {pool.name}: {pool.size} slot(s), waiting for queued runs (Ctrl-C to stop)\n")
    out.flush()
    while not stop.wait(max(settings.stale_after_seconds / 2, 1.0)):
        try:
            pool.housekeeping()
        except RunbookBotError as e:
            log.warning("housekeeping: %s", e)
    pool.stop(why=f"worker stopped by {stopped_by[0]}" if stopped_by else "the worker stopped")
    return 0


def _cmd_audit(spine: Spine, args: argparse.Namespace, out: TextIO) -> int:
    if args.audit_verb == "verify":
        anchors = spine.service.anchors.read_all() if spine.service.anchors is not None else []  # before the scan
        res = audit.verify(spine.db, anchors)
        warnings = [*spine.warnings, *res.warnings]
        if args.json:
            _print_json({**res.as_json(), "warnings": warnings}, out)
        else:
            if res.ok:
                anchored = ", ".join(f"{a.source} ({a.anchors}, last event {a.last_seq})"
                                     for a in res.anchors if a.anchors) or "none"
                out.write(f"audit chain intact: {res.events} events; anchors checked: {anchored}\n")
            elif res.bad_seq is None:
                out.write(f"audit trail BROKEN: {res.reason}\n")
            else:
                out.write(f"audit chain BROKEN at event {res.bad_seq}: {res.reason}\n")
            for warning in warnings:
                out.write(f"warning: {warning}\n")
        return 0 if res.ok else 1
    n = 0
    try:
        target = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
        try:
            for line in audit.export(spine.db):
                target.write(line + "\n")
                n += 1
            target.flush()
        finally:
            if target is not sys.stdout:
                target.close()
    except BrokenPipeError:
        raise
    except OSError as e:  # ENOSPC on write carries no file name: name the output
        if e.filename is None:
            e.filename = "standard output" if args.output == "-" else args.output
        raise
    sys.stderr.write(f"exported {n} events\n")
    return 0


def _cmd_serve(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    process = build_serve(settings, http_port=args.http, workers=not args.no_workers,
                          scheduler=not args.no_scheduler, slack=True, out=out)
    return _run_server(process, out)


def _cmd_scheduler(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    return _run_server(build_scheduler(settings, http_port=args.http, out=out), out)


def _run_server(process: ServeProcess, out: TextIO) -> int:
    from bot.server import serve

    try:
        _warn(process.spine.warnings)
        return serve(process, out=out)
    finally:
        process.close()


def _cmd_drills(spine: Spine, args: argparse.Namespace, out: TextIO) -> int:
    from bot.scheduler.drills import drills_command

    return drills_command(spine, as_json=args.json, chart=args.chart, out=out)


# One-shot commands: the spine built by build_cli, closed when the command returns.
_COMMANDS: dict[str, Callable[[Spine, argparse.Namespace, TextIO], int]] = {
    "runbooks": _cmd_runbooks, "show": _cmd_show, "request": _cmd_request, "approve": _cmd_decide,
    "deny": _cmd_decide, "status": _cmd_status, "runs": _cmd_runs, "cancel": _cmd_cancel,
    "audit": _cmd_audit, "drills": _cmd_drills,
}
# Long-running processes: each built by its own composition root (bot.composition).
_PROCESSES: dict[str, Callable[[Settings, argparse.Namespace, TextIO], int]] = {
    "worker": _cmd_worker, "serve": _cmd_serve, "scheduler": _cmd_scheduler,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)  # retries are reported once, by us
    spine: Spine | None = None
    try:
        settings = Settings.from_env()
        if args.verb == "init":
            return _cmd_init(settings, args.force, sys.stdout)
        if args.verb == "specs":
            return _cmd_specs(settings, args.write, sys.stdout)
        if args.verb == "db":
            return _cmd_db(settings, args.db_verb, sys.stdout)
        if args.verb == "demo":
            from bot import demo

            verbs = {"up": demo.up, "down": demo.down, "status": demo.status}
            return verbs[args.demo_verb](settings.home, sys.stdout)
        if args.verb in _PROCESSES:
            return _PROCESSES[args.verb](settings, args, sys.stdout)
        spine = build_cli(settings)
        return _COMMANDS[args.verb](spine, args, sys.stdout)
    except RunbookBotError as e:
        sys.stderr.write(f"runbook-bot: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _closed_pipe()
    except OSError as e:
        sys.stderr.write(f"runbook-bot: error: {os_error_line(e)}\n")
        return 2
    finally:
        if spine is not None:
            spine.close()


def os_error_line(e: OSError) -> str:
    """One line for an OSError: which path, why, and what to check."""
    why = e.strerror or type(e).__name__
    where = f"{e.filename}: " if e.filename is not None else ""
    if e.filename2 is not None:
        where = f"{e.filename} -> {e.filename2}: "
    hint = {28: "free some space", 13: "check its permissions (and RUNBOOK_BOT_HOME)",
            30: "set RUNBOOK_BOT_HOME to a writable directory",
            20: "a parent of it is a file, not a directory (check RUNBOOK_BOT_HOME)"}.get(e.errno or 0, "")
    return f"{where}{why}" + (f": {hint}" if hint else "")


def _closed_pipe() -> int:
    """The reader of our output went away (`| head`): stop quietly, as a command killed by SIGPIPE would."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
    except (OSError, ValueError):
        pass
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
