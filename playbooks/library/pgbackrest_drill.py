#!/usr/bin/python
"""Ansible module: one step of a pgBackRest restore drill (preflight, restore+start, verify, cleanup, report)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pgbackrest_drill
short_description: One step of a pgBackRest restore drill into a scratch PostgreSQL cluster
description:
  - Runs one step of a restore drill. The playbook calls the steps in order inside block/rescue/always and
    passes the accumulated O(state) from one step to the next, so timings (RTO) span steps.
  - C(preflight) checks the OS user, the PostgreSQL binaries, that O(drill_port) is free on 127.0.0.1, that
    O(scratch_dir) is absent or carries the drill's own marker file, that the repository answers
    C(pgbackrest info --output=json) with C(status.code) 0 (the command exits 0 for a missing stanza), picks
    the backup set, and checks the PostgreSQL major version and the free disk space. Supports check mode
    and then returns C(plan) lines.
  - C(restore) creates O(scratch_dir) (with the marker file first) and runs C(pgbackrest restore) as
    O(os_user) with C(--archive-mode=off) (so the promoted copy never archives into the production repo) and
    C(--tablespace-map-all) into the scratch dir, then pins the copy to 127.0.0.1:O(drill_port), a unix
    socket in the scratch dir and a trust-on-the-private-socket-only pg_hba file.
  - C(restore) then starts the copy with C(pg_ctl -w) and waits until it has left recovery and a write
    succeeds (C(pg_ctl -w) returns as soon as a hot standby accepts read-only connections). Restore and
    start are one module run so that no Ansible task switch lands inside the measured RTO.
  - C(verify) runs every check even when one fails (marker row, row counts, table checksums,
    C(pg_amcheck --heapallindexed --install-missing) on every database, WAL completeness for C(latest)),
    stops the copy, runs C(pg_checksums --check) when data checksums are enabled, then C(pgbackrest verify)
    (it exits 0 even when it finds errors, so its text output is parsed).
  - C(cleanup) stops the copy and removes O(scratch_dir) only when it carries the drill's marker file.
  - C(report) computes RTO/RPO, writes the JSON report to O(report_path) and returns it with a summary line.
  - A failing step fails with C(check=NAME failed: detail) for every failed check.
options:
  step:
    description: Which step to run.
    type: str
    required: true
    choices: [preflight, restore, verify, cleanup, report]
  stanza:
    description: pgBackRest stanza to restore.
    type: str
    required: true
  pgbackrest_config:
    description: pgBackRest configuration file (pgBackRest's default when omitted).
    type: path
  pg_bin_dir:
    description: Directory with postgres, pg_ctl, psql, pg_amcheck and pg_checksums.
    type: path
    default: /usr/lib/postgresql/15/bin
  drill_port:
    description: TCP port (127.0.0.1 only) and socket number of the scratch cluster.
    type: int
    default: 54329
  scratch_dir:
    description: Directory the drill creates and removes. It must be absent or carry the marker file.
    type: path
    required: true
  os_user:
    description: Unprivileged OS user that runs pgBackRest and PostgreSQL (the module switches with runuser when root).
    type: str
    default: postgres
  db_superuser:
    description: A superuser role of the restored cluster (used over the private unix socket).
    type: str
    default: postgres
  target:
    description: C(latest) (end of the archive), C(immediate) (end of the backup) or an ISO timestamp with a time zone.
    type: str
    default: latest
  backup_set:
    description: Backup label to restore; default the newest one (for a time target, the newest that ended before it).
    type: str
  expectations:
    description:
      - C(marker) {database, table, column, value} a row written before the backup that must be found.
      - C(row_counts) list of {database, table, count}.
      - C(checksums) list of {database, table, md5}; the md5 is
        C(SELECT md5(coalesce(string_agg(t::text, E'\n' ORDER BY t::text COLLATE "C"), '')) FROM table t).
    type: dict
    default: {}
  settings:
    description: Extra PostgreSQL settings for the scratch copy (e.g. a smaller shared_buffers).
    type: dict
    default: {}
  recovery_timeout:
    description: Seconds to wait for the copy to accept writes.
    type: int
    default: 3600
  amcheck_jobs:
    description: Parallel connections for pg_amcheck.
    type: int
    default: 2
  verify_repo:
    description: Run C(pgbackrest verify) on the stanza.
    type: bool
    default: true
  state:
    description: The C(drill) value returned by the previous step.
    type: dict
    default: {}
  failure:
    description: For C(report), the failure message of the step that failed (empty when none did).
    type: str
    default: ""
  report_path:
    description: For C(report), where the JSON report is written (parent directories are created).
    type: path
author: runbook-bot
"""

EXAMPLES = r"""
- name: Preflight
  pgbackrest_drill:
    step: preflight
    stanza: main
    scratch_dir: /var/tmp/restore-drill/main
  register: drill_preflight

- name: Restore
  pgbackrest_drill:
    step: restore
    stanza: main
    scratch_dir: /var/tmp/restore-drill/main
    state: "{{ drill_preflight.drill }}"
"""

RETURN = r"""
drill:
  description: Accumulated drill state (backup, checks, timings, timestamps); pass it to the next step.
  returned: always
  type: dict
checks:
  description: The checks this step ran, each {name, ok, detail, seconds}.
  returned: always
  type: list
plan:
  description: Deterministic lines saying what the drill would do (preflight).
  returned: when step is preflight
  type: list
report:
  description: The drill report that was written to report_path.
  returned: when step is report
  type: dict
summary:
  description: One line, PASS/FAIL with RTO, RPO and the backup label.
  returned: when step is report
  type: str
"""

import json  # noqa: E402
import os  # noqa: E402
import pwd  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import datetime  # noqa: E402
from typing import Any  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.pgbackrest_drill_commands import Commands  # noqa: E402
from ansible.module_utils.pgbackrest_drill_report import build_report, write_report  # noqa: E402
from ansible.module_utils.pgbackrest_drill_state import Check, CheckFailed, DrillState  # noqa: E402
from ansible.module_utils.pgbackrest_drill_text import (  # noqa: E402
    iso,
    now,
    parse_lsn,
    parse_target,
    quote_conf,
    quote_ident_path,
    quote_literal,
    segno,
    tail,
)
from ansible.module_utils.runbook_module import dispatch  # noqa: E402

MARKER_FILE = ".runbook-bot-drill"
MARKER_TEXT = "created by runbook-bot pgbackrest_restore_drill; removed when the drill ends\n"
SETTING_NAME = re.compile(r"^[a-z_][a-z0-9_.]*$")


class Drill(Commands):
    def __init__(self, module: AnsibleModule) -> None:
        self.m = module
        p = module.params
        self.p = p
        self.state: DrillState = dict(p["state"] or {})  # type: ignore[assignment]  # the previous step's
        self.state.setdefault("checks", [])
        self.state.setdefault("timings", {})
        self.checks: list[Check] = []
        self.scratch = os.path.abspath(p["scratch_dir"])
        self.data = os.path.join(self.scratch, "data")
        self.sock = os.path.join(self.scratch, "sock")
        self.log = os.path.join(self.scratch, "postgres.log")
        self.bin = p["pg_bin_dir"]

    # -- checks --------------------------------------------------------------------------------------
    def check(self, name: str, ok: bool, detail: str, started: float | None = None) -> bool:
        entry: Check = {"name": name, "ok": bool(ok), "detail": detail}
        if started is not None:
            entry["seconds"] = round(now() - started, 3)
        self.checks.append(entry)
        return ok

    def failed(self) -> list[tuple[str, str]]:
        return [(c["name"], c["detail"]) for c in self.checks if not c["ok"]]

    def finish(self, **extra: object) -> None:
        self.state["checks"] = list(self.state["checks"]) + self.checks
        failures = self.failed()
        result = {"changed": extra.pop("changed", False), "drill": self.state, "checks": self.checks, **extra}
        if failures:
            self.state["failed_checks"] = [n for n, _ in failures]
            self.m.fail_json(msg=str(CheckFailed(failures)), **result)
        self.m.exit_json(**result)

    # -- scratch dir ---------------------------------------------------------------------------------
    def scratch_status(self) -> str:
        """absent | ours | foreign | not_a_dir"""
        if not os.path.lexists(self.scratch):
            return "absent"
        if os.path.islink(self.scratch) or not os.path.isdir(self.scratch):
            return "not_a_dir"
        if os.path.isfile(os.path.join(self.scratch, MARKER_FILE)):
            return "ours"
        return "foreign"

    def postmaster_pid(self) -> int | None:
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                pid = int(f.readline().strip())
        except (OSError, ValueError):
            return None
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            return None
        # only a postmaster whose data dir is ours (a stale pid file may name a reused pid)
        if any(os.fsencode(self.data) == a or os.fsencode(self.data) in a for a in cmd):
            return pid
        return None

    def stop_cluster(self) -> str:
        """Stop the scratch cluster if it runs: fast, then immediate, then SIGKILL. Returns what happened."""
        if self.postmaster_pid() is None:
            return "not running"
        pg_ctl = os.path.join(self.bin, "pg_ctl")
        for mode in ("fast", "immediate"):
            self.run([pg_ctl, "-D", self.data, "-m", mode, "-w", "-t", "60", "stop"], timeout=90)
            if self.postmaster_pid() is None:
                return f"stopped ({mode})"
        pid = self.postmaster_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            deadline = now() + 30
            while self.postmaster_pid() is not None and now() < deadline:
                time.sleep(0.1)
        return "killed"

    def chown(self, path: str) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam(self.p["os_user"])
            os.chown(path, pw.pw_uid, pw.pw_gid)

    # -- steps ---------------------------------------------------------------------------------------
    def step_preflight(self) -> None:
        p = self.p
        t0 = now()
        self.state.update({
            "stanza": p["stanza"], "target": p["target"], "scratch_dir": self.scratch,
            "drill_port": p["drill_port"], "drill_started_at": t0,
        })
        # target
        try:
            kind, target_epoch = parse_target(p["target"])
            self.state["target_kind"], self.state["target_epoch"] = kind, target_epoch
            self.check("target", True, f"{kind}")
        except CheckFailed as e:
            for n, d in e.failures:
                self.check(n, False, d)
            kind, target_epoch = "invalid", None
        # OS user
        user = p["os_user"]
        try:
            pwd.getpwnam(user)
            me = pwd.getpwuid(os.geteuid()).pw_name
            if os.geteuid() == 0 and user == "root":
                self.check("os_user", False, "PostgreSQL refuses to run as root: set os_user to an unprivileged user")
            elif os.geteuid() != 0 and user != me:
                self.check("os_user", False, f"running as {me}: cannot switch to {user} without root")
            else:
                self.check("os_user", True, user)
        except KeyError:
            self.check("os_user", False, f"no such OS user {user!r}")
        # binaries
        missing = [b for b in ("postgres", "pg_ctl", "psql", "pg_amcheck", "pg_checksums")
                   if not os.access(os.path.join(self.bin, b), os.X_OK)]
        pg_major = None
        if missing:
            self.check("pg_binaries", False, f"missing in {self.bin}: {', '.join(missing)}")
        else:
            r = self.run([os.path.join(self.bin, "postgres"), "--version"])
            mv = re.search(r"\(PostgreSQL\) (\d+)", r.stdout)
            pg_major = mv.group(1) if mv else None
            self.check("pg_binaries", bool(pg_major), r.stdout.strip() or tail(r.stderr))
        if shutil.which("pgbackrest") is None:
            self.check("pgbackrest_binary", False, "pgbackrest not found on PATH")
        # port
        port = p["drill_port"]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                self.check("port_free", True, f"127.0.0.1:{port}")
            except OSError as e:
                self.check("port_free", False, f"127.0.0.1:{port} is in use ({e.strerror})")
        # scratch dir
        status = self.scratch_status()
        self.state["scratch_status"] = status
        if status == "absent":
            self.check("scratch_dir", True, f"{self.scratch} absent")
        elif status == "ours":
            self.check("scratch_dir", True, f"{self.scratch} is left over from an earlier drill: will be removed")
        elif status == "foreign":
            self.check("scratch_dir", False,
                       f"{self.scratch} exists and was not created by the drill (no {MARKER_FILE}): left untouched")
        else:
            self.check("scratch_dir", False, f"{self.scratch} exists and is not a directory: left untouched")
        # repository
        backup = None
        r = self.pgbackrest("--output=json", "info", timeout=300)
        info = None
        if r.returncode != 0:
            self.check("repo_reachable", False, f"pgbackrest info exited {r.returncode}: {tail(r.stderr or r.stdout)}")
        else:
            try:
                info = json.loads(r.stdout)[0]
            except (ValueError, IndexError, KeyError) as e:
                self.check("repo_reachable", False, f"pgbackrest info output is not JSON: {e}")
        if info is not None:
            st = info.get("status", {})
            if st.get("code") != 0:
                self.check("repo_reachable", False,
                           f"stanza {p['stanza']!r}: status {st.get('code')} {st.get('message', '')}".strip())
                info = None
            else:
                self.check("repo_reachable", True, f"stanza {p['stanza']}: ok, {len(info.get('backup', []))} backups")
        if info is not None:
            backup = self.select_backup(info, kind, target_epoch)
        if backup is not None and info is not None:
            db: dict[str, Any] = next((d for d in info.get("db", []) if d.get("id") == backup["database"]["id"]), {})
            self.state["backup"] = {
                "label": backup["label"], "type": backup["type"], "size_bytes": backup["info"]["size"],
                "repo_size_bytes": backup["info"]["repository"]["size"],
                "started_at": iso(backup["timestamp"]["start"]), "stopped_at": iso(backup["timestamp"]["stop"]),
                "stop_epoch": backup["timestamp"]["stop"], "age_seconds": round(t0 - backup["timestamp"]["stop"], 1),
                "lsn_stop": backup["lsn"]["stop"], "wal_stop": backup["archive"]["stop"],
                "pg_version": db.get("version"), "system_id": db.get("system-id"),
            }
            db_id = backup["database"]["id"]
            archive = [a for a in info.get("archive", []) if a.get("database", {}).get("id") == db_id]
            self.state["archive_max"] = max((a["max"] for a in archive if a.get("max")), default=None)
            if pg_major is not None:
                self.check("pg_version", str(db.get("version")) == pg_major,
                           f"backup is PostgreSQL {db.get('version')}, {self.bin} is {pg_major}")
            # disk
            need = int(backup["info"]["size"])
            probe = self.scratch
            while not os.path.isdir(probe):
                probe = os.path.dirname(probe) or "/"
            st_fs = os.statvfs(probe)
            free = st_fs.f_bavail * st_fs.f_frsize
            self.check("disk_space", free >= need,
                       f"{free // 2**20} MiB free on {probe}, restored size {need // 2**20} MiB")
        self.state["timings"]["preflight_seconds"] = round(now() - t0, 3)
        plan = self.plan() if not self.failed() else []
        self.finish(plan=plan)

    def select_backup(self, info: dict[str, Any], kind: str, target_epoch: float | None) -> dict[str, Any] | None:
        backups = info.get("backup", [])
        if self.p["backup_set"]:
            chosen = next((b for b in backups if b["label"] == self.p["backup_set"]), None)
            if chosen is None:
                self.check("backup_selected", False, f"no backup {self.p['backup_set']!r} in stanza")
                return None
        elif kind == "time" and target_epoch is not None:
            before = [b for b in backups if b["timestamp"]["stop"] < target_epoch]
            if not before:
                self.check("backup_selected", False, f"no backup ended before the target {self.p['target']}")
                return None
            chosen = before[-1]
        else:
            if not backups:
                self.check("backup_selected", False, "the stanza has no backups")
                return None
            chosen = backups[-1]
        if chosen.get("error"):
            self.check("backup_selected", False, f"backup {chosen['label']} recorded page checksum errors")
            return None
        self.check("backup_selected", True, f"{chosen['label']} ({chosen['type']})")
        return chosen  # type: ignore[no-any-return]  # parsed JSON

    def plan(self) -> list[str]:
        p, b = self.p, self.state["backup"]
        exp = p["expectations"] or {}
        lines = []
        if self.state.get("scratch_status") == "ours":
            lines.append(f"remove leftover drill dir {self.scratch}")
        lines += [
            f"restore stanza {p['stanza']} backup {b['label']} ({b['type']}, {b['size_bytes'] // 2**20} MiB) "
            f"target {p['target']} into {self.scratch} as {p['os_user']} with --archive-mode=off",
            f"start the copy on 127.0.0.1:{p['drill_port']} and wait until it accepts writes",
            "verify: pg_amcheck --heapallindexed on every database, pg_checksums when enabled"
            + (", pgbackrest verify" if p["verify_repo"] else ""),
        ]
        if exp.get("marker"):
            mk = exp["marker"]
            lines.append(f"verify marker row {mk.get('database', 'postgres')}.{mk.get('table')}")
        if exp.get("row_counts"):
            lines.append(f"verify row counts of {len(exp['row_counts'])} tables")
        if exp.get("checksums"):
            lines.append(f"verify checksums of {len(exp['checksums'])} tables")
        lines.append(f"stop the copy and remove {self.scratch}")
        if p["report_path"]:
            lines.append(f"write report {p['report_path']}")
        return lines

    def step_restore(self) -> None:
        p = self.p
        status = self.scratch_status()
        if status == "ours":
            self.stop_cluster()
            shutil.rmtree(self.scratch)
        elif status != "absent":
            self.check("scratch_dir", False, f"{self.scratch} exists and was not created by the drill: left untouched")
            self.finish()
        parent = os.path.dirname(self.scratch)
        os.makedirs(parent, exist_ok=True)
        os.mkdir(self.scratch, 0o700)
        with open(os.path.join(self.scratch, MARKER_FILE), "w") as f:  # marker first: the dir is ours from now on
            f.write(MARKER_TEXT)
        self.state["created_scratch"] = True
        for d in (self.data, self.sock):
            os.mkdir(d, 0o700)
        for path in (self.scratch, self.data, self.sock, os.path.join(self.scratch, MARKER_FILE)):
            self.chown(path)
        if self.run(["test", "-w", self.data]).returncode != 0:  # every parent must be searchable by os_user
            self.check("scratch_dir", False, f"{p['os_user']} cannot reach {self.data} (check the parents' modes)")
            self.finish(changed=True)
        args = [f"--pg1-path={self.data}", "--archive-mode=off",
                f"--tablespace-map-all={os.path.join(self.scratch, 'tablespaces')}",
                f"--set={self.state['backup']['label']}", "--log-level-console=warn", "--log-level-stderr=warn"]
        kind = self.state.get("target_kind", "latest")
        if kind == "immediate":
            args += ["--type=immediate", "--target-action=promote"]
        elif kind == "time":
            args += ["--type=time", f"--target={p['target']}", "--target-action=promote"]
        t0 = now()
        self.state["restore_started_at"] = t0
        r = self.pgbackrest(*args, "restore")
        self.state["timings"]["restore_seconds"] = round(now() - t0, 3)
        if r.returncode != 0:
            self.check("restore", False, f"pgbackrest restore exited {r.returncode}: {tail(r.stderr or r.stdout)}", t0)
            self.finish(changed=True)
        self.check("restore", True, f"backup {self.state['backup']['label']} restored", t0)
        self.configure()
        # start in the same module run: no Ansible task switch inside the measured RTO
        self.start()

    def configure(self) -> None:
        """Pin the copy to the drill port, a private socket and our own pg_hba (trust on that socket only)."""
        p = self.p
        hba = os.path.join(self.scratch, "drill_hba.conf")
        ident = os.path.join(self.scratch, "drill_ident.conf")
        with open(hba, "w") as f:
            f.write("# restore drill: only the private unix socket (dir mode 0700) is accepted\nlocal all all trust\n")
        with open(ident, "w") as f:
            f.write("")
        conf = os.path.join(self.data, "postgresql.conf")
        if not os.path.exists(conf):  # Debian-style clusters keep postgresql.conf outside the data dir
            with open(conf, "w") as f:
                f.write("# created by the restore drill\n")
            self.chown(conf)
        overrides: dict[str, object] = {
            "port": p["drill_port"], "listen_addresses": "127.0.0.1", "unix_socket_directories": self.sock,
            "hba_file": hba, "ident_file": ident, "archive_mode": "off", "archive_command": "",
            "logging_collector": "off", "log_destination": "stderr", "ssl": "off", "hot_standby": "on",
            "cluster_name": "restore-drill", "primary_conninfo": "", "primary_slot_name": "",
            "synchronous_standby_names": "", "external_pid_file": "",
        }
        for k, v in (p["settings"] or {}).items():
            if not SETTING_NAME.match(str(k)):
                self.check("settings", False, f"bad setting name {k!r}")
                self.finish(changed=True)
            overrides[str(k)] = v
        with open(os.path.join(self.data, "postgresql.auto.conf"), "a") as f:
            f.write("\n# restore drill overrides (runbook-bot)\n")
            for k, v in overrides.items():
                f.write(f"{k} = {quote_conf(v)}\n")
        for path in (hba, ident):
            self.chown(path)
            os.chmod(path, 0o600)

    def log_excerpt(self, pattern: str = r"FATAL|PANIC|ERROR") -> str:
        try:
            with open(self.log, errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return ""
        hits = [ln for ln in lines if re.search(pattern, ln)]
        return " | ".join((hits or lines)[-6:])

    def start(self) -> None:
        p = self.p
        t0 = now()
        self.state["start_started_at"] = t0
        timeout = p["recovery_timeout"]
        r = self.run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l", self.log, "-w", "-t", str(timeout),
                      "start"], timeout=timeout + 30)
        if r.returncode != 0:
            self.state["timings"]["start_recovery_seconds"] = round(now() - t0, 3)
            self.check("recovery", False, f"pg_ctl start exited {r.returncode}: {self.log_excerpt() or tail(r.stderr)}",
                       t0)
            self.finish(changed=True)
        # pg_ctl -w returns once a hot standby accepts read-only connections: wait for read-write ourselves
        deadline = t0 + timeout
        probe = ("SELECT pg_is_in_recovery();\nCREATE TEMP TABLE drill_write_probe(x int);\n"
                 "INSERT INTO drill_write_probe VALUES (1);\n")
        last_err = ""
        while True:
            r = self.psql(probe, timeout=60)
            if r.returncode == 0 and r.stdout.strip().splitlines()[:1] == ["f"]:
                break
            last_err = tail(r.stderr) or r.stdout.strip()
            if self.postmaster_pid() is None:
                self.state["timings"]["start_recovery_seconds"] = round(now() - t0, 3)
                self.check("recovery", False, f"the copy stopped during recovery: {self.log_excerpt()}", t0)
                self.finish(changed=True)
            if now() > deadline:
                self.state["timings"]["start_recovery_seconds"] = round(now() - t0, 3)
                self.check("recovery", False, f"not read-write after {timeout}s: {last_err}", t0)
                self.finish(changed=True)
            time.sleep(0.05)
        rw = now()
        self.state["read_write_at"] = rw
        self.state["timings"]["start_recovery_seconds"] = round(rw - t0, 3)
        self.state["rto_seconds"] = round(rw - self.state["restore_started_at"], 3)
        self.check("read_write", True, "left recovery and accepted a write", t0)
        # what recovery replayed: last transaction time, and where it ended (timeline history)
        try:
            out = self.sql_value(
                "SELECT coalesce(extract(epoch FROM pg_last_xact_replay_timestamp())::text, ''),"
                " pg_walfile_name(pg_current_wal_lsn()),"
                " (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'),"
                " current_setting('data_checksums')")
            replay, walfile, seg_size, checksums = out.split("\t")
            self.state["data_checksums"] = checksums == "on"
            self.state["wal_segment_size"] = int(seg_size)
            if replay:
                self.state["last_replay_epoch"] = float(replay)
                self.state["last_replay_source"] = "pg_last_xact_replay_timestamp()"
            else:
                self.replay_from_log()
            tli = int(walfile[0:8], 16)
            if tli > 1:
                hist = self.sql_value(f"SELECT pg_read_file('pg_wal/{tli:08X}.history')")
                last = [ln.split("\t") for ln in hist.splitlines() if ln.strip() and not ln.startswith("#")][-1]
                self.state["recovery_end_lsn"] = last[1]
                self.state["recovery_end_timeline"] = int(last[0])
        except (RuntimeError, ValueError, IndexError) as e:
            self.check("recovery_facts", False, f"could not read recovery facts: {e}")
        self.finish(changed=True)

    def replay_from_log(self) -> None:
        try:
            with open(self.log, errors="replace") as f:
                text = f.read()
        except OSError:
            return
        m = re.findall(r"last completed transaction was at log time (\S+ \S+)", text)
        if m:
            ts = m[-1]
            ts = ts + ":00" if re.search(r"[+-]\d{2}$", ts) else ts
            self.state["last_replay_epoch"] = datetime.fromisoformat(ts.replace(" ", "T")).timestamp()
            self.state["last_replay_source"] = "recovery log"

    def step_verify(self) -> None:
        p = self.p
        t0 = now()
        exp = p["expectations"] or {}
        # pgbackrest verify only reads the repository: run it alongside the checks on the copy
        verify_proc = None
        if p["verify_repo"]:
            verify_proc = subprocess.Popen(
                self.argv_as_owner(self.pgbackrest_argv("--output=text", "--verbose", "--log-level-console=warn",
                                                        "verify")),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
                env={**os.environ, "LC_ALL": "C", "LANG": "C"})
        self.wal_check()
        if exp.get("marker"):
            self.marker_check(exp["marker"])
        if exp.get("row_counts"):
            self.row_count_check(exp["row_counts"])
        if exp.get("checksums"):
            self.checksum_check(exp["checksums"])
        self.amcheck()
        # pg_checksums --check needs a cleanly stopped cluster: the live checks are done, stop it now
        t1 = now()
        stopped = self.stop_cluster()
        self.state["stopped"] = stopped
        if self.state.get("data_checksums"):
            r = self.run([os.path.join(self.bin, "pg_checksums"), "--check", "-D", self.data], timeout=None)
            detail = tail(r.stdout + "\n" + r.stderr, 4)
            self.check("data_checksums", r.returncode == 0, detail or f"exit {r.returncode}", t1)
        else:
            self.check("data_checksums", True, "not enabled in this cluster: skipped", t1)
        if verify_proc is not None:
            out, err = verify_proc.communicate()
            self.repo_verify(subprocess.CompletedProcess(verify_proc.args, verify_proc.returncode, out, err), t0)
        self.state["timings"]["verify_seconds"] = round(now() - t0, 3)
        self.finish(changed=True)

    def wal_check(self) -> None:
        """For `latest`: recovery must end in the last archived segment, else WAL in between is missing."""
        t0 = now()
        if self.state.get("target_kind") != "latest":
            self.check("wal_complete", True, "PostgreSQL itself fails a time/immediate target it cannot reach", t0)
            return
        amax, end = self.state.get("archive_max"), self.state.get("recovery_end_lsn")
        size = self.state.get("wal_segment_size")
        if not amax or not end or not size:
            self.check("wal_complete", False, "cannot tell where recovery ended or what the archive holds", t0)
            return
        a_tli, a_seg = segno(amax, size)
        end_seg = (parse_lsn(end) - 1) // size
        if a_tli != self.state.get("recovery_end_timeline"):
            self.check("wal_complete", True,
                       f"archive ends on timeline {a_tli}, recovery on {self.state.get('recovery_end_timeline')}: "
                       "not compared", t0)
            return
        self.check("wal_complete", end_seg >= a_seg,
                   f"recovery ended at {end} (segment {end_seg:X}), archive holds up to {amax}"
                   + ("" if end_seg >= a_seg else ": WAL between them is missing or unreadable"), t0)

    def marker_check(self, mk: dict[str, Any]) -> None:
        t0 = now()
        db = mk.get("database", "postgres")
        try:
            # identifiers and the value are quoted by quote_ident_path / quote_literal
            sql = (f"SELECT count(*) FROM {quote_ident_path(mk['table'])} "  # noqa: S608
                   f"WHERE {quote_ident_path(mk['column'])}::text = {quote_literal(mk['value'])}")
            n = int(self.sql_value(sql, db))
            self.check("marker_present", n > 0,
                       f"{db}.{mk['table']}: {n} row(s) with {mk['column']} = {mk['value']!r}", t0)
        except (RuntimeError, ValueError, KeyError) as e:
            self.check("marker_present", False, f"{db}.{mk.get('table')}: {e}", t0)

    def _compare_tables(self, name: str, items: list[dict[str, Any]], query: str, key: str, mismatch: str,
                        cast: Callable[[Any], Any] = str) -> None:
        """One check over expected per-table values: run `query` (with {table}) and compare cast(result) with
        cast(it[key]); `mismatch` formats a difference from {got} and {want}."""
        t0 = now()
        bad, good = [], 0
        for it in items:
            db = it.get("database", "postgres")
            try:
                got = cast(self.sql_value(query.format(table=quote_ident_path(it["table"])), db))
                want = cast(it[key])
            except (RuntimeError, ValueError, KeyError) as e:
                bad.append(f"{db}.{it.get('table')}: {e}")
                continue
            if got != want:
                bad.append(f"{db}.{it['table']}: " + mismatch.format(got=got, want=want))
            else:
                good += 1
        self.check(name, not bad, "; ".join(bad) if bad else f"{good} tables match", t0)

    def row_count_check(self, items: list[dict[str, Any]]) -> None:
        self._compare_tables("row_counts", items, "SELECT count(*) FROM {table}", "count",
                             "{got} rows, expected {want}", cast=int)

    def checksum_check(self, items: list[dict[str, Any]]) -> None:
        query = ("SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text COLLATE \"C\"), '')) "
                 "FROM {table} t")
        self._compare_tables("table_checksums", items, query, "md5", "md5 {got}, expected {want}")

    def amcheck(self) -> None:
        t0 = now()
        r = self.run([
            os.path.join(self.bin, "pg_amcheck"), "--all", "--heapallindexed", "--install-missing",
            f"--jobs={self.p['amcheck_jobs']}", "-h", self.sock, "-p", str(self.p["drill_port"]),
            "-U", self.p["db_superuser"], "--no-password",
        ])
        out = (r.stdout + "\n" + r.stderr).strip()
        # pg_amcheck exits 0 when it skips a database (e.g. no amcheck extension): count skips as failures
        skips = [ln for ln in out.splitlines() if "skipping" in ln.lower()]
        dbs = self.sql_value("SELECT count(*) FROM pg_database WHERE datallowconn") if r.returncode == 0 else "?"
        if r.returncode != 0 or skips:
            self.check("amcheck", False, f"pg_amcheck exited {r.returncode}: {tail(out, 6)}", t0)
        else:
            self.check("amcheck", True, f"{dbs} databases, heap and all indexes, no corruption", t0)

    def repo_verify(self, r: subprocess.CompletedProcess[str], t0: float) -> None:
        out = r.stdout
        label = self.state.get("backup", {}).get("label")
        # pgbackrest verify exits 0 even when it finds errors: read its report
        status = re.search(r"^status: (\S+)", out, re.M)
        bad_backups = re.findall(r"backup: (\S+), status: (?!valid)(\S+)", out)
        problems = []
        if r.returncode != 0:
            problems.append(f"exited {r.returncode}: {tail(r.stderr)}")
        if not status:
            problems.append("no status in its output")
        elif status.group(1) != "ok":
            problems.append(f"status {status.group(1)}")
        for b, st in bad_backups:
            problems.append(f"backup {b} {st.rstrip(',')}" + (" (the restored one)" if b == label else ""))
        for m in re.finditer(r"^\s+(missing: \d+, checksum invalid: \d+, size invalid: \d+, other: \d+)", out, re.M):
            if re.search(r"[1-9]", m.group(1)):
                problems.append(m.group(1))
        self.check("repo_verify", not problems,
                   "; ".join(dict.fromkeys(problems)) if problems else "pgbackrest verify: status ok", t0)

    def step_cleanup(self) -> None:
        t0 = now()
        status = self.scratch_status()
        result: dict[str, Any] = {"scratch_status": status}
        if status == "ours":
            try:
                result["cluster"] = self.stop_cluster()
                shutil.rmtree(self.scratch)
                result["removed"] = True
                self.check("cleanup", True, f"{result['cluster']}, {self.scratch} removed", t0)
            except OSError as e:
                self.check("cleanup", False, f"{self.scratch}: {e}", t0)
        else:
            result["removed"] = False
            self.check("cleanup", True, f"{self.scratch} {status}: nothing of ours to remove", t0)
        self.state["cleanup"] = result
        self.finish(changed=bool(result.get("removed")))

    def step_report(self) -> None:
        report, summary = build_report(self.state, self.p, self.scratch, now())
        if self.p["report_path"]:
            write_report(self.p["report_path"], report)
        self.m.exit_json(changed=bool(self.p["report_path"]), report=report, summary=summary, drill=self.state,
                         checks=[])


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "step": {"type": "str", "required": True,
                     "choices": ["preflight", "restore", "verify", "cleanup", "report"]},
            "stanza": {"type": "str", "required": True},
            "pgbackrest_config": {"type": "path"},
            "pg_bin_dir": {"type": "path", "default": "/usr/lib/postgresql/15/bin"},
            "drill_port": {"type": "int", "default": 54329},
            "scratch_dir": {"type": "path", "required": True},
            "os_user": {"type": "str", "default": "postgres"},
            "db_superuser": {"type": "str", "default": "postgres"},
            "target": {"type": "str", "default": "latest"},
            "backup_set": {"type": "str"},
            "expectations": {"type": "dict", "default": {}},
            "settings": {"type": "dict", "default": {}},
            "recovery_timeout": {"type": "int", "default": 3600},
            "amcheck_jobs": {"type": "int", "default": 2},
            "verify_repo": {"type": "bool", "default": True},
            "state": {"type": "dict", "default": {}},
            "failure": {"type": "str", "default": ""},
            "report_path": {"type": "path"},
        },
        supports_check_mode=True,
    )
    drill = Drill(module)
    step = module.params["step"]
    if module.check_mode and step != "preflight":
        module.exit_json(changed=False, skipped=True, msg="check mode: only preflight runs", drill=drill.state,
                         checks=[])
    try:
        dispatch(drill, step)
    except CheckFailed as e:
        drill.checks += [{"name": n, "ok": False, "detail": d} for n, d in e.failures]
        drill.finish()


if __name__ == "__main__":
    main()
