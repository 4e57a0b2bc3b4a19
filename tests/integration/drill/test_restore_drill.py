"""The pgBackRest restore drill playbook against a real PostgreSQL 15 + pgBackRest repository.

One source cluster per module (archiving to a local repo, pgbench data, a marker row, a full and an
incremental backup); every test runs the real playbook with ansible-playbook into its own scratch dir and
port, and checks the JSON report, the named check of a failure, and that nothing is left running.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.drill import (
    MARKER,
    BackedUpCluster,
    DrillRun,
    drill_vars,
    port_listening,
    port_taken_listener,
    postgres_running_in,
    run_drill,
    source_cluster,
)
from tests.support.pgcluster import as_user, make_tmp_dir, remove_tree

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("pgbackrest") is None,
                       reason="pgbackrest not installed (apt-get install pgbackrest)"),
]

CHECKSUM_SQL = ("SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text COLLATE \"C\"), '')) "
                "FROM pgbench_branches t")


@pytest.fixture(scope="module")
def source() -> Iterator[BackedUpCluster]:
    """Source cluster archiving to a local repo, with pgbench data, a marker row, a full + an incr backup."""
    with source_cluster("drill-src-", scale=2, incremental=True) as cluster:
        yield cluster


@pytest.fixture
def drill_dir(source: BackedUpCluster) -> Iterator[Path]:
    """A per-test dir holding the scratch dir and the report; any cluster left in it is stopped on teardown."""
    base = make_tmp_dir("drill-run-")
    yield base
    pidfile = base / "scratch" / "data" / "postmaster.pid"
    if pidfile.exists():  # only when the playbook failed to clean up; the tests then fail on their own
        import subprocess

        subprocess.run(as_user(source.os_user, [str(source.pg.bin_dir / "pg_ctl"), "-D", str(pidfile.parent),
                                                "-m", "immediate", "-w", "stop"]), check=False)
    remove_tree(base)


def report_of(drill_dir: Path) -> dict[str, Any]:
    return json.loads((drill_dir / "report.json").read_text())  # type: ignore[no-any-return]


def assert_nothing_left(run: DrillRun, drill_dir: Path, port: int) -> None:
    assert not postgres_running_in(drill_dir / "scratch"), run
    assert not port_listening(port), run
    assert not (drill_dir / "scratch").exists(), run


def test_drill_passes_with_rto_rpo_and_all_checks(source: BackedUpCluster, drill_dir: Path) -> None:
    """A drill of the latest backup passes every check, reports RTO/RPO and leaves nothing behind."""
    expectations = {
        "marker": {"table": "drill_marker", "column": "note", "value": MARKER},
        "row_counts": [{"table": "pgbench_accounts", "count": 200000},
                       {"table": "public.pgbench_branches", "count": 2}],
        "checksums": [{"database": "postgres", "table": "pgbench_branches",
                       "md5": source.pg.psql(CHECKSUM_SQL).strip()}],
    }
    v = drill_vars(source, drill_dir, expectations=expectations)
    run = run_drill(v)
    assert run.rc == 0, run
    report = report_of(drill_dir)
    assert report["result"] == "PASS"
    assert isinstance(report["rto_seconds"], float) and report["rto_seconds"] > 0
    assert isinstance(report["rpo_seconds"], float)
    assert report["backup"]["label"] == source.info()["backup"][-1]["label"]
    names = {c["name"]: c["ok"] for c in report["checks"]}
    for check in ("port_free", "scratch_dir", "repo_reachable", "restore", "read_write", "wal_complete",
                  "marker_present", "row_counts", "table_checksums", "amcheck", "data_checksums", "repo_verify",
                  "cleanup"):
        assert names.get(check) is True, (check, report["checks"])
    assert run.stats["summary"][0].startswith("PASS"), run
    assert run.stats["result"]["rto_seconds"] == report["rto_seconds"]
    assert_nothing_left(run, drill_dir, v["drill_port"])


def test_point_in_time_keeps_the_row_before_and_not_the_row_after(source: BackedUpCluster, drill_dir: Path) -> None:
    """A time target restores the row committed before it and not the row committed after it."""
    source.pg.psql("CREATE TABLE pitr(note text); INSERT INTO pitr VALUES ('before')")
    target = source.pg.psql(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'").strip()
    source.pg.psql("SELECT pg_sleep(0.3); INSERT INTO pitr VALUES ('after')")
    source.wait_archived(source.switch_wal())
    v = drill_vars(source, drill_dir, target=target, expectations={
        "marker": {"table": "pitr", "column": "note", "value": "before"},
        "row_counts": [{"table": "pitr", "count": 1}],
    })
    run = run_drill(v)
    assert run.rc == 0, run
    report = report_of(drill_dir)
    assert report["result"] == "PASS"
    assert report["target"] == target
    assert report["rpo_seconds"] is not None and report["rpo_seconds"] >= 0
    assert_nothing_left(run, drill_dir, v["drill_port"])


def test_corrupted_repo_file_fails_the_restore_check(source: BackedUpCluster, drill_dir: Path) -> None:
    """A corrupted file in the backup being restored fails the drill with check=restore."""
    label = str(source.info()["backup"][-1]["label"])
    victim = max((source.repo_path / "backup" / source.stanza / label / "pg_data").rglob("*.gz"),
                 key=lambda p: p.stat().st_size)
    original = victim.read_bytes()
    try:
        with open(victim, "r+b") as f:
            f.seek(min(100, len(original) // 2))
            f.write(b"not gzip at all, sorry")
        v = drill_vars(source, drill_dir)
        run = run_drill(v)
    finally:
        victim.write_bytes(original)
    assert run.rc != 0, run
    assert "check=restore failed" in run.failure_messages(), run
    assert report_of(drill_dir)["result"] == "FAIL"
    assert_nothing_left(run, drill_dir, v["drill_port"])


def test_missing_wal_segment_fails_although_postgres_promotes(source: BackedUpCluster, drill_dir: Path) -> None:
    """A WAL segment missing from the archive fails the drill (wal_complete) although PostgreSQL promotes."""
    source.pg.psql("CREATE TABLE walgap(note text); INSERT INTO walgap VALUES ('a')")
    source.switch_wal()
    source.pg.psql("INSERT INTO walgap VALUES ('b')")
    gap = source.switch_wal()
    source.pg.psql("INSERT INTO walgap VALUES ('late')")
    source.wait_archived(source.switch_wal())
    segment = next(p for p in source.archive_files() if p.name.startswith(gap))
    aside = drill_dir / segment.name
    shutil.move(segment, aside)
    try:
        v = drill_vars(source, drill_dir, expectations={"marker": {"table": "walgap", "column": "note",
                                                                   "value": "late"}})
        run = run_drill(v)
    finally:
        shutil.move(aside, segment)
    assert run.rc != 0, run
    msg = run.failure_messages()
    assert "check=wal_complete failed" in msg, run
    assert "check=marker_present failed" in msg, run
    report = report_of(drill_dir)
    assert report["result"] == "FAIL" and report["rto_seconds"] is not None  # it did promote
    assert_nothing_left(run, drill_dir, v["drill_port"])


def test_wrong_stanza_fails_repo_reachable(source: BackedUpCluster, drill_dir: Path) -> None:
    """A stanza the repository does not have fails preflight with check=repo_reachable (info exits 0)."""
    v = drill_vars(source, drill_dir, stanza="no-such-stanza")
    run = run_drill(v)
    assert run.rc != 0, run
    assert "check=repo_reachable failed" in run.failure_messages(), run
    assert report_of(drill_dir)["result"] == "FAIL"
    assert_nothing_left(run, drill_dir, v["drill_port"])


def test_taken_port_fails_port_free_and_leaves_the_owner_alone(source: BackedUpCluster, drill_dir: Path) -> None:
    """A drill port already in use fails with check=port_free and the process holding it keeps it."""
    listener, port = port_taken_listener()
    try:
        v = drill_vars(source, drill_dir, drill_port=port)
        run = run_drill(v)
        assert run.rc != 0, run
        assert "check=port_free failed" in run.failure_messages(), run
        assert port_listening(port)
    finally:
        listener.close()
    assert not postgres_running_in(drill_dir / "scratch")
    assert not (drill_dir / "scratch").exists()


def test_scratch_dir_not_ours_is_left_untouched(source: BackedUpCluster, drill_dir: Path) -> None:
    """An existing scratch dir without the drill's marker fails check=scratch_dir and is not touched."""
    scratch = drill_dir / "scratch"
    scratch.mkdir()
    (scratch / "precious.txt").write_text("do not delete")
    v = drill_vars(source, drill_dir)
    run = run_drill(v)
    assert run.rc != 0, run
    assert "check=scratch_dir failed" in run.failure_messages(), run
    assert (scratch / "precious.txt").read_text() == "do not delete"
    assert sorted(p.name for p in scratch.iterdir()) == ["precious.txt"]
    assert not postgres_running_in(scratch)
    assert not port_listening(v["drill_port"])


def test_check_mode_runs_preflight_only_and_reports_a_plan(source: BackedUpCluster, drill_dir: Path) -> None:
    """In check mode the drill only runs preflight, reports plan lines and creates nothing."""
    v = drill_vars(source, drill_dir)
    run = run_drill(v, check=True)
    assert run.rc == 0, run
    plan = run.stats["plan"]
    label = source.info()["backup"][-1]["label"]
    assert any(f"backup {label}" in line and "--archive-mode=off" in line for line in plan), plan
    assert plan == run_drill(v, check=True).stats["plan"]  # deterministic: hashed by the spine
    assert not (drill_dir / "scratch").exists()
    assert not (drill_dir / "report.json").exists()


def test_immediate_target_restores_the_backup_end(source: BackedUpCluster, drill_dir: Path) -> None:
    """An `immediate` target stops at the end of the backup, so a row written after the backup is absent."""
    source.pg.psql("CREATE TABLE after_backup(note text); INSERT INTO after_backup VALUES ('x')")
    source.wait_archived(source.switch_wal())
    v = drill_vars(source, drill_dir, target="immediate",
                   expectations={"marker": {"table": "drill_marker", "column": "note", "value": MARKER}})
    run = run_drill(v)
    assert run.rc == 0, run
    report = report_of(drill_dir)
    assert report["result"] == "PASS"
    assert report["target_time"] == report["backup"]["stopped_at"]
    v2 = drill_vars(source, drill_dir, target="immediate", expectations={
        "marker": {"table": "after_backup", "column": "note", "value": "x"}})
    run2 = run_drill(v2)
    assert "check=marker_present failed" in run2.failure_messages(), run2
    assert_nothing_left(run2, drill_dir, v2["drill_port"])


def test_leftover_scratch_dir_of_an_earlier_drill_is_replaced(source: BackedUpCluster, drill_dir: Path) -> None:
    """A scratch dir carrying the drill's marker (a crashed earlier drill) is removed and the drill passes."""
    scratch = drill_dir / "scratch"
    scratch.mkdir()
    (scratch / ".runbook-bot-drill").write_text("left by a crashed drill\n")
    (scratch / "junk").write_text("x")
    v = drill_vars(source, drill_dir)
    run = run_drill(v)
    assert run.rc == 0, run
    assert report_of(drill_dir)["result"] == "PASS"
    assert_nothing_left(run, drill_dir, v["drill_port"])


def test_missing_wal_segment_before_a_time_target_fails_recovery(source: BackedUpCluster, drill_dir: Path) -> None:
    """A WAL segment missing between the backup and a time target fails the drill with check=recovery."""
    source.pg.psql("CREATE TABLE walgap_t(note text); INSERT INTO walgap_t VALUES ('a')")
    gap = source.switch_wal()
    source.pg.psql("INSERT INTO walgap_t VALUES ('b')")
    target = source.pg.psql(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'").strip()
    source.pg.psql("SELECT pg_sleep(0.2); INSERT INTO walgap_t VALUES ('c')")
    source.wait_archived(source.switch_wal())
    segment = next(p for p in source.archive_files() if p.name.startswith(gap))
    aside = drill_dir / segment.name
    shutil.move(segment, aside)
    try:
        v = drill_vars(source, drill_dir, target=target)
        run = run_drill(v)
    finally:
        shutil.move(aside, segment)
    assert run.rc != 0, run
    msg = run.failure_messages()
    assert "check=recovery failed" in msg, run
    assert "recovery ended before configured recovery target was reached" in msg, run  # PostgreSQL's own words
    assert_nothing_left(run, drill_dir, v["drill_port"])
