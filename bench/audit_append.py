"""Audit chain throughput and verification time, against baselines measured in the same run.

- append: events/s through bot.storage.audit.append (one transaction per event, as state changes write
  them), vs plain INSERTs of the same rows without the chain. Goal >= 2,000 events/s.
- verify: seconds to verify 100,000 events, vs only reading the same rows. Goal < 5 s.
Run: python bench/audit_append.py [--events N] [--verify-events N]
"""

from __future__ import annotations

import argparse
import threading

import psycopg
from _common import median, start_postgres, timed, verdict
from psycopg.types.json import Jsonb

from bot.storage import audit
from bot.storage.database import Database, migrate

BODY = {"runbook": "rollout-undo", "params": {"namespace": "prod", "deployment": "api"}, "outcome": "queued"}


def append_chain(db: Database, n: int, threads: int) -> None:
    def work(k: int) -> None:
        for i in range(n // threads):
            with db.transaction() as conn:
                audit.append(conn, actor="bench", action="queued", run_id=k * n + i, body=BODY)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def append_plain(db: Database, n: int, threads: int) -> None:
    def work(k: int) -> None:
        for i in range(n // threads):
            with db.transaction() as conn:
                conn.execute("INSERT INTO plain_events (at, run_id, actor, action, body)"
                             " VALUES (now(), %s, %s, %s, %s)", (k * n + i, "bench", "queued", Jsonb(BODY)))

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def load_chain(url: str, n: int, batch: int = 2000) -> None:
    """Append n real chained events (the production append statement, pipelined in a few transactions)."""
    with psycopg.connect(url) as conn:
        for start in range(0, n, batch):
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(audit._APPEND, [
                    {"run_id": i, "actor": "bench", "action": "queued", "body": Jsonb({**BODY, "i": i})}
                    for i in range(start, min(n, start + batch))
                ])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=4000)
    ap.add_argument("--verify-events", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()
    pg = start_postgres()
    try:
        with psycopg.connect(pg.dsn(), autocommit=True) as c:
            c.execute("CREATE DATABASE bench_append")
            c.execute("CREATE DATABASE bench_verify")
        db = Database(pg.dsn("bench_append"), max_size=args.threads + 2)
        migrate(db)
        with db.transaction() as conn:
            conn.execute("CREATE TABLE plain_events (id bigserial PRIMARY KEY, at timestamptz, run_id bigint,"
                         " actor text, action text, body jsonb)")
        print(f"audit append: {args.events} events, {args.threads} threads, one transaction per event, fsync on")
        rows = []
        for threads in (1, args.threads):
            plain = median([timed(lambda t=threads: append_plain(db, args.events, t)) for _ in range(2)])
            chain = median([timed(lambda t=threads: append_chain(db, args.events, t)) for _ in range(2)])
            rows.append((threads, args.events / plain, args.events / chain))
        for threads, plain_rate, chain_rate in rows:
            print(f"  {threads} thread(s): plain INSERT {plain_rate:8.0f} ev/s | hash chain {chain_rate:8.0f} ev/s"
                  f" | chain/plain ratio {chain_rate / plain_rate:.2f}")
        best = max(r[2] for r in rows)
        batch = 20

        def chain_batched() -> None:
            for start in range(0, args.events, batch):
                with db.transaction() as conn:
                    audit.append_many(conn, [("bench", "queued", i, BODY) for i in range(start, start + batch)])

        def plain_batched() -> None:
            for start in range(0, args.events, batch):
                with db.transaction() as conn, conn.cursor() as cur:
                    cur.executemany("INSERT INTO plain_events (at, run_id, actor, action, body)"
                                    " VALUES (now(), %s, %s, %s, %s)",
                                    [(i, "bench", "queued", Jsonb(BODY)) for i in range(start, start + batch)])

        pb = args.events / median([timed(plain_batched) for _ in range(2)])
        cb = args.events / median([timed(chain_batched) for _ in range(2)])
        print(f"  {batch} events per transaction (pipelined): plain INSERT {pb:8.0f} ev/s | hash chain {cb:8.0f} ev/s"
              f" | chain/plain ratio {cb / pb:.2f}")
        print(f"  goal >= 2,000 ev/s with the chain: one event per commit {best:.0f} ev/s"
              f" -> {verdict(best >= 2000)} (bounded by this disk's durable commit rate, like plain INSERTs);"
              f" with shared commits (audit.append_many) {cb:.0f} ev/s -> {verdict(cb >= 2000)}")
        ok = audit.verify(db)
        assert ok.ok, ok.reason
        db.close()

        vdb = Database(pg.dsn("bench_verify"))
        migrate(vdb)
        load_chain(pg.dsn("bench_verify"), args.verify_events)

        def read_only() -> None:
            with audit._snapshot(vdb) as conn:  # the same snapshot transaction verify scans in
                for _ in audit._rows(conn, "SELECT seq, at, run_id, actor, action, body, prev_hash, hash"
                                           " FROM audit_events ORDER BY seq"):
                    pass

        read = median([timed(read_only) for _ in range(2)])
        result: list[audit.VerifyResult] = []
        verify = median([timed(lambda: result.append(audit.verify(vdb))) for _ in range(2)])
        assert result[-1].ok and result[-1].events == args.verify_events
        print(f"audit verify: {args.verify_events} events: read only {read:.2f} s | verify {verify:.2f} s"
              f" | verify/read ratio {verify / read:.2f}")
        print(f"  goal < 5 s: {verify:.2f} s -> {verdict(verify < 5)}")
        vdb.close()
    finally:
        pg.stop("immediate")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
