"""Spine overhead: a no-op playbook through request -> approve -> worker -> succeeded, against running the
same playbook with `ansible-playbook` directly, interleaved in the same run. Goal: <= 1.3x wall time.
Run: python bench/run_overhead.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

import psycopg
from _common import ROOT, median, start_postgres, timed, verdict

from bot.composition import build_cli
from bot.config import Settings
from bot.domain.runs import RunState
from bot.service import LocalTracker

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    pg = start_postgres()
    home = Path(tempfile.mkdtemp(prefix="rb-bench-home-"))
    try:
        with psycopg.connect(pg.dsn(), autocommit=True) as c:
            c.execute("CREATE DATABASE bench_overhead")
        env = {
            "RUNBOOK_BOT_HOME": str(home), "DATABASE_URL": pg.dsn("bench_overhead"),
            "RUNBOOK_BOT_RUNBOOKS": str(HERE / "catalog" / "runbooks"),
            "RUNBOOK_BOT_PLAYBOOKS": str(HERE / "playbooks"),
            "RUNBOOK_BOT_CONFIG": str(HERE / "catalog" / "operators.yaml"),
            "RUNBOOK_BOT_INVENTORY": str(ROOT / "inventory" / "local"),
        }
        os.environ.update(env)
        ctx = build_cli(Settings.from_env(env))
        alice = ctx.service.directory.operator("alice")
        bob = ctx.service.directory.operator("bob")
        cmd = ["ansible-playbook", "-i", str(ROOT / "inventory" / "local"), str(HERE / "playbooks" / "noop.yml"),
               "-e", "who=bench"]

        def direct() -> None:
            subprocess.run(cmd, check=True, capture_output=True, cwd=HERE / "playbooks")

        def spine() -> None:
            res = ctx.service.request("noop", {"who": "bench"}, alice)
            ctx.service.approve(res.run.id, bob)
            done = ctx.service.execute_next("bench", LocalTracker())
            assert done is not None and done.state is RunState.SUCCEEDED, done

        direct()
        spine()  # warm both paths (imports, page cache)
        d, s = [], []
        for _ in range(args.rounds):
            d.append(timed(direct))
            s.append(timed(spine))
        ratio = median(s) / median(d)
        print(f"no-op playbook, {args.rounds} interleaved rounds (median wall time):")
        print(f"  ansible-playbook directly:                  {median(d):.2f} s")
        print(f"  request -> approve -> worker -> succeeded:  {median(s):.2f} s")
        print(f"  ratio {ratio:.2f}x (goal <= 1.3x) -> {verdict(ratio <= 1.3)}")
        ctx.close()
    finally:
        pg.stop("immediate")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
