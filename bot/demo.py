"""`runbook-bot demo up|down|status`: a real restore-drill target on this machine, for the README tour.

`up` builds a small PostgreSQL 15 cluster (Debian's server binaries) that archives its WAL with pgBackRest
into a local repository: stanza `demo`, a database `app` with a marker row and a reference table, one full
backup. Then it stops that cluster: a drill needs only the repository, so nothing runs between `up` and
`down`. The drill's settings (config, binaries, port, scratch dir, OS user, expectations) are handed to
playbooks as inventory-level defaults (bot.composition.inventory_defaults), so `runbook-bot request restore-drill
stanza=demo` works with no inventory edits; the environment's inventory still overrides them.

`down` stops anything still running from it (the source cluster, a drill copy left by a killed worker)
and removes the directory. As root everything runs as the unprivileged database user EMBEDDED_OS_USER in a
directory it owns (next to the embedded cluster under /var/lib/runbook-bot/<hash>/); otherwise as you,
under RUNBOOK_BOT_HOME/demo.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, TextIO

from bot.errors import RunbookBotError
from bot.storage.database import EMBEDDED_OS_USER, embedded_pgdata, prepare_root_cluster_dir

STANZA = "demo"
PG_BIN_DIR = Path("/usr/lib/postgresql/15/bin")  # pgBackRest 2.45 (Debian 12) supports PostgreSQL up to 15
# The drill settings the demo hands to playbooks, in the bot's home (root-owned 0700 when root: the
# database user owns the demo dir and must not be able to choose inventory variables for root's runs),
# written last: its presence means the demo is up. Only these keys are read back.
VARS_FILE = "demo-drill-vars.json"
DRILL_KEYS = ("pgbackrest_config", "pg_bin_dir", "drill_port", "scratch_dir", "os_user", "db_superuser",
              "expectations")
_MARKER = {"database": "app", "table": "public.backup_marker", "column": "note", "value": "drill-marker-v1"}
_PLAN_ROWS = 3
_DATA_SQL = """
CREATE TABLE public.backup_marker (note text NOT NULL);
INSERT INTO public.backup_marker VALUES ('drill-marker-v1');
CREATE TABLE public.plans (id int PRIMARY KEY, name text NOT NULL, price int NOT NULL);
INSERT INTO public.plans VALUES (1, 'free', 0), (2, 'team', 29), (3, 'business', 99);
"""
_CHECKSUM_SQL = ("SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text COLLATE \"C\"), '')) "
                 "FROM public.plans t")


class DemoError(RunbookBotError):
    """The demo cannot be set up here (missing packages, a step failed); says what to do."""


def demo_dir(home: Path) -> Path:
    return embedded_pgdata(home).parent / "demo"


def demo_user() -> str:
    return EMBEDDED_OS_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name


def drill_vars(home: Path) -> dict[str, Any]:
    """The restore drill's inventory settings for the demo stanza; {} when the demo is not up."""
    try:
        data = json.loads((home / VARS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: data[k] for k in DRILL_KEYS if k in data} if isinstance(data, dict) else {}


def _as_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") or "runuser"
    return [runuser, "-u", EMBEDDED_OS_USER, "--", *argv]


def _run(argv: list[str], what: str, stdin: str | None = None) -> str:
    done = subprocess.run(_as_user(argv), capture_output=True, text=True, input=stdin, cwd="/", timeout=600,
                          env={**os.environ, "LC_ALL": "C", "LANG": "C"}, check=False)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise DemoError(f"demo: {what} failed (exit {done.returncode}): {detail[-1] if detail else ''}")
    return done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _postgres_pids_under(path: Path) -> list[int]:
    """postmaster processes whose data dir is under `path` (from /proc: our own clusters only)."""
    found, target = [], os.fsencode(path)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"postgres") and any(a == target or a.startswith(target + b"/")
                                                           for a in args[1:]):
            found.append(int(entry))
    return found


def _stop_clusters(root: Path) -> int:
    """Stop every cluster with a postmaster.pid under `root` (the source, a leftover drill copy)."""
    stopped = 0
    for pidfile in sorted(root.rglob("postmaster.pid")):
        data = pidfile.parent
        done = subprocess.run(_as_user([str(PG_BIN_DIR / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t",
                                        "60", "stop"]), capture_output=True, cwd="/", check=False, timeout=120)
        stopped += done.returncode == 0  # a stale pid file is not a running cluster
    deadline = time.monotonic() + 30
    while _postgres_pids_under(root) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in _postgres_pids_under(root):  # did not stop in time: ours, under our directory
        os.kill(pid, 9)
    return stopped


def _check_prerequisites() -> None:
    missing = [name for name, ok in (("pgbackrest", shutil.which("pgbackrest") is not None),
                                     ("PostgreSQL 15 server", (PG_BIN_DIR / "initdb").exists())) if not ok]
    if missing:
        raise DemoError(f"demo: {' and '.join(missing)} not installed: run `sudo make system-deps` "
                        "(apt-get install pgbackrest postgresql-15), then `runbook-bot demo up` again")


def _sql(sock: Path, sql: str, database: str = "postgres") -> str:
    return _run([str(PG_BIN_DIR / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(sock),
                 "-p", "5432", "-U", "postgres", "-d", database], f"psql ({database})", stdin=sql).strip()


def up(home: Path, out: TextIO) -> int:
    _check_prerequisites()
    base = demo_dir(home)
    if drill_vars(home):
        out.write(f"demo: already up in {base} (stanza {STANZA}); `runbook-bot demo down` removes it\n")
        return 0
    if base.exists():
        down(home, out)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.geteuid() == 0:
        prepare_root_cluster_dir(embedded_pgdata(home), home)
    base.mkdir(mode=0o700)
    for sub in ("repo", "log", "lock", "spool", "sock"):
        (base / sub).mkdir(mode=0o700)
    config = base / "pgbackrest.conf"
    pgdata, sock = base / "pgdata", base / "sock"
    config.write_text(
        "[global]\n"
        f"repo1-path={base / 'repo'}\nrepo1-retention-full=2\nlog-path={base / 'log'}\nlock-path={base / 'lock'}\n"
        f"spool-path={base / 'spool'}\nlog-level-file=off\nstart-fast=y\ncompress-type=gz\ncompress-level=1\n"
        f"\n[{STANZA}]\npg1-path={pgdata}\npg1-port=5432\npg1-socket-path={sock}\npg1-user=postgres\n"
    )
    if os.geteuid() == 0:
        pw = pwd.getpwnam(EMBEDDED_OS_USER)
        for path in [base, *base.rglob("*")]:
            os.chown(path, pw.pw_uid, pw.pw_gid)
    user = demo_user()
    out.write(f"demo: creating a small PostgreSQL 15 cluster in {pgdata} as {user}, archiving to pgBackRest "
              f"stanza {STANZA}...\n")
    out.flush()
    _run([str(PG_BIN_DIR / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust", "--data-checksums",
          "--encoding=UTF8", "--locale=C"], "initdb")
    settings = {
        "listen_addresses": "''", "port": "5432", "unix_socket_directories": f"'{sock}'",
        "wal_level": "replica", "archive_mode": "on",
        "archive_command": f"'pgbackrest --config={config} --stanza={STANZA} archive-push %p'",
    }
    with open(pgdata / "postgresql.auto.conf", "a") as f:
        f.writelines(f"{k} = {v}\n" for k, v in settings.items())
    _run([str(PG_BIN_DIR / "pg_ctl"), "-D", str(pgdata), "-w", "-t", "60", "-l", str(base / "log" / "postgres.log"),
          "start"], "starting the demo cluster")
    try:
        _sql(sock, "CREATE DATABASE app")
        _sql(sock, _DATA_SQL, "app")
        checksum = _sql(sock, _CHECKSUM_SQL, "app")
        pgbackrest = ["pgbackrest", f"--config={config}", f"--stanza={STANZA}"]
        _run([*pgbackrest, "stanza-create"], "pgbackrest stanza-create")
        _run([*pgbackrest, "--type=full", "backup"], "pgbackrest backup")
        label = json.loads(_run([*pgbackrest, "--output=json", "info"], "pgbackrest info"))[0]["backup"][-1]["label"]
    finally:
        _stop_clusters(pgdata)
    settings_for_drill = {
        "pgbackrest_config": str(config), "pg_bin_dir": str(PG_BIN_DIR), "drill_port": _free_port(),
        "scratch_dir": str(base / "drill"), "os_user": user, "db_superuser": "postgres",
        "expectations": {
            "marker": _MARKER,
            "row_counts": [{"database": "app", "table": "public.plans", "count": _PLAN_ROWS}],
            "checksums": [{"database": "app", "table": "public.plans", "md5": checksum}],
        },
    }
    partial = home / (VARS_FILE + ".partial")
    partial.write_text(json.dumps(settings_for_drill, indent=2) + "\n")
    partial.rename(home / VARS_FILE)
    out.write(f"demo: stanza {STANZA} has full backup {label}; the demo cluster is stopped again (a drill needs "
              "only the repository)\n"
              f"demo: next: runbook-bot request restore-drill stanza={STANZA}; `runbook-bot demo down` removes it\n")
    return 0


def down(home: Path, out: TextIO) -> int:
    base = demo_dir(home)
    (home / VARS_FILE).unlink(missing_ok=True)  # first: no run picks up a half-removed demo
    if not base.exists():
        out.write(f"demo: nothing to remove ({base} does not exist)\n")
        return 0
    stopped = _stop_clusters(base)
    shutil.rmtree(base)
    left = _postgres_pids_under(base)
    if left:
        raise DemoError(f"demo: postgres processes {left} still run under {base}")
    out.write(f"demo: removed {base}" + (f" (stopped {stopped} cluster(s))" if stopped else "")
              + "; nothing of the demo is running\n")
    return 0


def status(home: Path, out: TextIO) -> int:
    base, found = demo_dir(home), drill_vars(home)
    if found:
        out.write(f"demo: up in {base}: stanza {STANZA} ({found['pgbackrest_config']}), drill port "
                  f"{found['drill_port']}, scratch dir {found['scratch_dir']}, as {found['os_user']}\n")
    else:
        out.write(f"demo: not set up (`runbook-bot demo up` creates it in {base})\n")
    return 0
