"""A source PostgreSQL cluster that archives to a local pgBackRest repository, for restore drills.

Builds on tests.support.pgcluster (PG 15 as an unprivileged OS user when root) and adds: a pgBackRest
config + repo in the cluster's base dir, archive_command -> `pgbackrest archive-push`, stanza-create,
pgbench data, backups, and helpers the drill tests use to break the repository on purpose.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.paths import ROOT
from tests.support.pgcluster import PgCluster, chown_tree, free_port, make_tmp_dir, remove_tree
from tests.support.playbooks import failed_messages
from tests.support.waiting import wait_for

STANZA = "drill"
PLAYBOOK = ROOT / "playbooks" / "pgbackrest_restore_drill.yml"


@dataclass
class BackedUpCluster:
    """A PgCluster plus its pgBackRest stanza; `backup()`, `info()`, `switch_wal()`."""

    base_dir: Path
    stanza: str = STANZA
    conf: dict[str, str] = field(default_factory=dict)
    repo_options: dict[str, str] = field(default_factory=dict)  # extra/overriding [global] pgBackRest options

    def __post_init__(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.pg = PgCluster(self.base_dir / "pg", conf={
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_command": f"'pgbackrest --config={self.config_path} --stanza={self.stanza} archive-push %p'",
            "max_wal_senders": "3",
            **self.conf,
        })

    @property
    def repo_path(self) -> Path:
        return self.base_dir / "repo"

    @property
    def config_path(self) -> Path:
        return self.base_dir / "pgbackrest.conf"

    @property
    def os_user(self) -> str:
        return self.pg.os_user

    def write_config(self) -> None:
        for sub in ("repo", "log", "lock", "spool"):
            (self.base_dir / sub).mkdir(exist_ok=True)
        options = {
            "repo1-path": str(self.repo_path),
            "repo1-retention-full": "4",
            "log-path": str(self.base_dir / "log"),
            "lock-path": str(self.base_dir / "lock"),
            "spool-path": str(self.base_dir / "spool"),
            "log-level-file": "off",
            "start-fast": "y",
            "compress-type": "gz",
            "compress-level": "1",
            # internal pgBackRest option: a corrupt repo file fails at once instead of after 15 s of retries
            "job-retry": "0",
            **self.repo_options,
        }
        stanza = {
            "pg1-path": str(self.pg.data_dir),
            "pg1-port": str(self.pg.port),
            "pg1-socket-path": str(self.pg.socket_dir),
            "pg1-user": self.pg.superuser,
        }
        self.config_path.write_text(
            "[global]\n" + "".join(f"{k}={v}\n" for k, v in options.items())
            + f"\n[{self.stanza}]\n" + "".join(f"{k}={v}\n" for k, v in stanza.items())
        )
        chown_tree(self.base_dir, self.os_user)

    def pgbackrest(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.pg.run_as_owner(
            ["pgbackrest", f"--config={self.config_path}", f"--stanza={self.stanza}", *args], check=check,
        )

    def start(self) -> BackedUpCluster:
        self.write_config()
        self.pg.start()
        self.pgbackrest("stanza-create")
        return self

    def stop(self) -> None:
        self.pg.stop()

    def pgbench_init(self, scale: int) -> None:
        self.pg.run_as_owner([
            str(self.pg.bin_dir / "pgbench"), "-i", "-q", "-s", str(scale), "-h", str(self.pg.socket_dir),
            "-p", str(self.pg.port), "-U", self.pg.superuser, "postgres",
        ])

    def backup(self, kind: str = "full") -> str:
        """Take a backup; return its label."""
        self.pgbackrest(f"--type={kind}", "backup")
        return str(self.info()["backup"][-1]["label"])

    def info(self) -> dict[str, Any]:
        out = self.pgbackrest("--output=json", "info").stdout
        return json.loads(out)[0]  # type: ignore[no-any-return]

    def switch_wal(self) -> str:
        """Close the current WAL segment (so it gets archived); return its file name."""
        return self.pg.psql("SELECT pg_walfile_name(pg_switch_wal())").strip()

    def wait_archived(self, walfile: str) -> None:
        """Wait until `walfile` has been archived (archive_command runs asynchronously)."""
        wait_for(lambda: self.pg.psql(
            "SELECT last_archived_wal FROM pg_stat_archiver").strip() >= walfile, timeout=60)

    def archive_files(self) -> list[Path]:
        return sorted(p for p in (self.repo_path / "archive" / self.stanza).rglob("0*") if p.is_file()
                      and len(p.name) > 24 and not p.name.endswith(".history"))


def port_taken_listener() -> tuple[socket.socket, int]:
    """A socket listening on 127.0.0.1 on a kernel-chosen port (the 'someone else has the port' case)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s, int(s.getsockname()[1])


@dataclass
class DrillRun:
    """One ansible-playbook run of the drill: exit code, JSON callback output, the spine's custom stats."""

    rc: int
    stdout: str
    stderr: str

    @property
    def output(self) -> dict[str, Any]:
        return json.loads(self.stdout[self.stdout.index("{"):])  # type: ignore[no-any-return]

    @property
    def stats(self) -> dict[str, Any]:
        """What the playbook reported with set_stats (plan / summary / result)."""
        return self.output.get("global_custom_stats", {})  # type: ignore[no-any-return]

    def failure_messages(self) -> str:
        """Every failed task's msg, joined (where the named checks show up)."""
        return "\n".join(failed_messages(self.output))

    def __str__(self) -> str:  # shown by pytest when an assertion fails
        return f"rc={self.rc}\n{self.stdout[-6000:]}\n{self.stderr[-2000:]}"


def run_drill(extra_vars: dict[str, object], check: bool = False) -> DrillRun:
    """Run the drill playbook for real with ansible-playbook against the local inventory."""
    argv = [
        str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(ROOT / "inventory" / "local"),
        str(PLAYBOOK), "-e", json.dumps(extra_vars),
    ]
    if check:
        argv.append("--check")
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_SHOW_CUSTOM_STATS": "1"}
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env, check=False)
    return DrillRun(r.returncode, r.stdout, r.stderr)


def postgres_running_in(path: Path) -> bool:
    """Is any postgres process running with its data dir under `path`? (reads /proc, no ps parsing)"""
    target = str(path)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in cmdline]
        if args and args[0].endswith("postgres") and any(target in a for a in args):
            return True
    return False


def port_listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


MARKER = "written-before-the-full-backup"


@contextmanager
def source_cluster(prefix: str, *, stanza: str = STANZA, scale: int,
                   incremental: bool) -> Iterator[BackedUpCluster]:
    """A started source cluster with pgbench data, a MARKER row and a full backup (then, when `incremental`,
    a change and an incr backup); stopped and removed on exit."""
    base = make_tmp_dir(prefix)
    cluster = BackedUpCluster(base, stanza=stanza)
    try:
        cluster.start()
        cluster.pgbench_init(scale=scale)
        cluster.pg.psql(f"CREATE TABLE drill_marker(note text); INSERT INTO drill_marker VALUES ('{MARKER}')")
        cluster.backup("full")
        if incremental:
            cluster.pg.psql("UPDATE pgbench_branches SET bbalance = bbalance + 7 WHERE bid = 1")
            cluster.backup("incr")
        yield cluster
    finally:
        cluster.stop()
        remove_tree(base)


def drill_vars(source: BackedUpCluster, drill_dir: Path, **over: Any) -> dict[str, Any]:
    vars_: dict[str, Any] = {
        "stanza": source.stanza,
        "pgbackrest_config": str(source.config_path),
        "pg_bin_dir": str(source.pg.bin_dir),
        "drill_port": free_port(),
        "scratch_dir": str(drill_dir / "scratch"),
        "os_user": source.os_user,
        "target": "latest",
        "report_path": str(drill_dir / "report.json"),
        "expectations": {"marker": {"table": "drill_marker", "column": "note", "value": MARKER}},
    }
    vars_.update(over)
    return vars_
