"""Benchmark: the whole restore drill playbook vs a raw `pgbackrest restore` + start until read-write.

Same backup, same run: a pgbench source (scale 50 by default) archiving to a local pgBackRest repo, one
full backup; then the baseline (restore into a scratch dir, start, poll until it leaves recovery and
accepts a write, stop, remove) and the drill playbook (which adds preflight, amcheck, pg_checksums,
pgbackrest verify, cleanup and the report). Prints both, the ratio (goal: checks add less than 3x) and the
drill's RTO to 0.1 s.

    python bench/drill.py [--scale 50] [--rounds 1] [--keep]

Needs PostgreSQL 15 server binaries and pgbackrest (Debian package); runs PostgreSQL as an unprivileged
user when started as root.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.drill import BackedUpCluster, run_drill  # noqa: E402
from tests.support.pgcluster import as_user, chown_tree, free_port, make_tmp_dir, remove_tree  # noqa: E402

GOAL_RATIO = 3.0


def raw_restore_and_start(src: BackedUpCluster, scratch: Path) -> float:
    """Baseline: pgbackrest restore + pg_ctl start + poll until read-write. Returns seconds (like RTO)."""
    data, sock = scratch / "data", scratch / "sock"
    port = free_port()
    data.mkdir(parents=True, mode=0o700)
    sock.mkdir(mode=0o700)
    chown_tree(scratch, src.os_user)

    def owner(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(as_user(src.os_user, argv), capture_output=True, text=True, **kw)  # type: ignore[call-overload,no-any-return]

    t0 = time.monotonic()
    owner(["pgbackrest", f"--config={src.config_path}", f"--stanza={src.stanza}", f"--pg1-path={data}",
           "--archive-mode=off", "restore"], check=True)
    with open(data / "postgresql.auto.conf", "a") as f:  # the minimum to run next to the source
        f.write(f"port = {port}\nunix_socket_directories = '{sock}'\nlisten_addresses = '127.0.0.1'\n")
    owner([str(src.pg.bin_dir / "pg_ctl"), "-D", str(data), "-l", str(scratch / "pg.log"), "-w", "-t", "3600",
           "start"], check=True)
    psql = [str(src.pg.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-h", str(sock), "-p", str(port), "-U",
            src.pg.superuser, "-d", "postgres"]
    while True:
        r = owner(psql, input="SELECT pg_is_in_recovery();\nCREATE TEMP TABLE w(x int);\n", check=False)
        if r.returncode == 0 and r.stdout.strip().splitlines()[:1] == ["f"]:
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    owner([str(src.pg.bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], check=False)
    remove_tree(scratch)
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=50, help="pgbench scale of the source (default 50)")
    ap.add_argument("--rounds", type=int, default=1, help="baseline+drill pairs to run (default 1)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (source cluster is stopped)")
    args = ap.parse_args()
    if shutil.which("pgbackrest") is None:
        print("pgbackrest is not installed (apt-get install -y pgbackrest)", file=sys.stderr)
        return 2

    base = make_tmp_dir("bench-drill-")
    src = BackedUpCluster(base / "src")
    try:
        t = time.monotonic()
        src.start()
        src.pgbench_init(args.scale)
        src.pg.psql("CREATE TABLE drill_marker(note text); INSERT INTO drill_marker VALUES ('bench')")
        print(f"source: pgbench scale {args.scale} loaded in {time.monotonic() - t:.1f} s", flush=True)
        t = time.monotonic()
        label = src.backup("full")
        size = int(src.info()["backup"][-1]["info"]["size"])
        print(f"backup {label}: {size / 2**20:.0f} MiB in {time.monotonic() - t:.1f} s", flush=True)

        raws, drills, rtos, reports = [], [], [], []
        for i in range(args.rounds):
            raws.append(raw_restore_and_start(src, base / f"raw{i}"))
            print(f"round {i + 1}: raw restore + start until read-write: {raws[-1]:.1f} s", flush=True)
            report_path = base / f"report{i}.json"
            t = time.monotonic()
            run = run_drill({
                "stanza": src.stanza, "pgbackrest_config": str(src.config_path), "pg_bin_dir": str(src.pg.bin_dir),
                "drill_port": free_port(), "scratch_dir": str(base / f"drill{i}"), "os_user": src.os_user,
                "target": "latest", "report_path": str(report_path),
                "expectations": {"marker": {"table": "drill_marker", "column": "note", "value": "bench"},
                                 "row_counts": [{"table": "pgbench_accounts", "count": args.scale * 100000}]},
            })
            drills.append(time.monotonic() - t)
            if run.rc != 0:
                print(f"drill failed:\n{run}", file=sys.stderr)
                return 1
            report = json.loads(report_path.read_text())
            reports.append(report)
            rtos.append(float(report["rto_seconds"]))
            tm = report["timings"]
            print(f"round {i + 1}: whole drill playbook: {drills[-1]:.1f} s = {drills[-1] / raws[-1]:.2f}x raw "
                  f"(RTO {rtos[-1]:.1f} s; restore "
                  f"{tm['restore_seconds']:.1f} s, start/recovery {tm['start_recovery_seconds']:.1f} s, verify "
                  f"{tm['verify_seconds']:.1f} s)", flush=True)
            checks = {c["name"]: c.get("seconds") for c in report["checks"] if c.get("seconds") is not None}
            print("  check seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in checks.items()), flush=True)

        # best of each over the rounds: the machine is shared, the minimum is the least disturbed figure
        raw, drill, rto = min(raws), min(drills), min(rtos)
        ratio = drill / raw
        print()
        if args.rounds > 1:
            print(f"(best of {args.rounds} rounds each)")
        print(f"raw pgbackrest restore + start until read-write : {raw:.1f} s")
        print(f"whole drill playbook (restore, checks, cleanup) : {drill:.1f} s")
        print(f"drill RTO (restore start -> read-write)         : {rto:.1f} s")
        print(f"ratio drill / raw                               : {ratio:.2f}x "
              f"({'meets' if ratio < GOAL_RATIO else 'MISSES'} the < {GOAL_RATIO:.0f}x goal)")
        print(f"RTO overhead vs raw                             : {rto / raw:.2f}x")
        return 0
    finally:
        src.stop()
        if not args.keep:
            remove_tree(base)
        else:
            print(f"kept {base}")


if __name__ == "__main__":
    sys.exit(main())
