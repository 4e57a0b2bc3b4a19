"""Audit anchors: the chain head kept outside PostgreSQL (a MAC'd append-only file, an Object Lock'ed S3
bucket), so that rewrites a hash chain alone cannot catch (done by the database's owner or a superuser,
hashes recomputed) fail `audit verify`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import psycopg
import pytest
from botocore.exceptions import ClientError

from bot.composition import build_cli
from bot.config import Settings
from bot.spine import Spine
from bot.storage import audit
from tests.support.spine import cli, drain, op

pytestmark = pytest.mark.slow


def _history(ctx: Spine) -> int:
    """Two finished runs (each transition anchored); returns the chain length."""
    for target in ("api", "web"):
        res = ctx.service.request("echo", {"target": target}, op(ctx, "alice"))
        ctx.service.approve(res.run.id, op(ctx, "bob"))
    drain(ctx)
    result = audit.verify(ctx.db)
    assert result.ok
    return result.events


def _verify(ctx: Spine) -> audit.VerifyResult:
    assert ctx.service.anchors is not None
    return audit.verify(ctx.db, ctx.service.anchors.read_all())


def _rechain(conn: psycopg.Connection[tuple[object, ...]], start: int) -> None:
    """Recompute prev_hash/hash of every event from `start` on, and the head: a careful rewrite."""
    prev_row = conn.execute("SELECT hash FROM audit_events WHERE seq = %s", (start - 1,)).fetchone()
    prev = str(prev_row[0]) if prev_row else audit.GENESIS
    rows = conn.execute(f"SELECT seq, {audit.DOCUMENT_OF_ROW} FROM audit_events WHERE seq >= %s ORDER BY seq",
                        (start,)).fetchall()
    for seq, document in rows:
        digest = audit.chain_hash(prev, str(document))
        conn.execute("UPDATE audit_events SET prev_hash = %s, hash = %s WHERE seq = %s", (prev, digest, seq))
        prev = digest
    conn.execute("UPDATE audit_head SET seq = (SELECT max(seq) FROM audit_events), hash = %s", (prev,))


def _as_superuser(url: str) -> psycopg.Connection[tuple[object, ...]]:
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("SET session_replication_role = replica")  # every trigger off for this session
    return conn


def _tail_delete(conn: psycopg.Connection[tuple[object, ...]], keep: int) -> None:
    conn.execute("DELETE FROM audit_events WHERE seq > %s", (keep,))
    conn.execute("UPDATE audit_head SET seq = %s, hash = (SELECT hash FROM audit_events WHERE seq = %s)",
                 (keep, keep))


def _edit(conn: psycopg.Connection[tuple[object, ...]], seq: int) -> None:
    conn.execute("UPDATE audit_events SET actor = 'carol' WHERE seq = %s", (seq,))
    _rechain(conn, seq)


def _truncate_reinsert(conn: psycopg.Connection[tuple[object, ...]], seq: int) -> None:
    rows = conn.execute("SELECT seq, at, run_id, actor, action, body FROM audit_events ORDER BY seq").fetchall()
    conn.execute("TRUNCATE audit_events")
    for s, at, run_id, actor, action, body in rows:
        conn.execute("INSERT INTO audit_events VALUES (%s, %s, %s, %s, %s, %s, '', '')",
                     (s, at, run_id, "carol" if s == seq else actor, action, psycopg.types.json.Jsonb(body)))
    _rechain(conn, 1)


REWRITES = {
    "tail_delete_and_head_moved": lambda conn, n: _tail_delete(conn, n - 4),
    "edit_and_recompute": lambda conn, n: _edit(conn, 3),
    "truncate_and_reinsert": lambda conn, n: _truncate_reinsert(conn, 3),
}


@pytest.mark.parametrize("kind", sorted(REWRITES))
def test_superuser_rewrites_are_caught_by_the_anchor_file(ctx: Spine, database_url: str, kind: str) -> None:
    """Rewrites that leave a self-consistent chain (triggers off, hashes recomputed) fail against the anchors."""
    n = _history(ctx)
    with _as_superuser(database_url) as conn:
        REWRITES[kind](conn, n)
    assert audit.verify(ctx.db).ok  # the chain alone cannot tell: this is why anchors exist
    result = _verify(ctx)
    assert not result.ok
    assert "audit-anchors line" in result.reason
    if kind == "tail_delete_and_head_moved":
        assert result.bad_seq == n - 3 and f"records event {n}" in result.reason, result.reason
    else:
        assert result.bad_seq is not None and result.bad_seq >= 3
        assert "was rewritten" in result.reason


def test_cli_verify_fails_naming_the_anchor_and_seq(ctx: Spine, spine_env: dict[str, str],
                                                    database_url: str) -> None:
    """`audit verify` exits 1 naming the anchor and the event; --json carries the anchor results."""
    n = _history(ctx)
    ok = cli(spine_env, "audit", "verify", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (anchor,) = json.loads(ok.stdout)["anchors"]
    assert anchor["ok"] and anchor["last_anchored_seq"] == n
    with _as_superuser(database_url) as conn:
        _tail_delete(conn, n - 2)
    bad = cli(spine_env, "audit", "verify")
    assert bad.returncode == 1
    assert f"BROKEN at event {n - 1}" in bad.stdout and "audit-anchors line" in bad.stdout, bad.stdout
    report = json.loads(cli(spine_env, "audit", "verify", "--json").stdout)
    assert report["ok"] is False and report["anchors"][0]["ok"] is False


def test_rewritten_anchor_file_is_detected(ctx: Spine, spine_env: dict[str, str]) -> None:
    """Editing the anchor file (a line's hash, or a whole file of new lines without the key) fails verify."""
    _history(ctx)
    path = Path(spine_env["RUNBOOK_BOT_HOME"]) / "audit-anchors"
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    first["hash"] = "f" * 64
    path.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    result = _verify(ctx)
    assert not result.ok and "line 1: its MAC does not match" in result.reason, result.reason


def test_runtime_role_cannot_rewrite_and_what_it_can_do_is_detected(runtime_ctx: Spine) -> None:
    """The bot's own role is refused every rewrite; the writes it is allowed (a bare row, a head bump) fail verify."""
    _history(runtime_ctx)
    for sql in ("DELETE FROM audit_events WHERE seq > 3", "UPDATE audit_events SET actor = 'carol' WHERE seq = 3",
                "TRUNCATE audit_events", "ALTER TABLE audit_events DISABLE TRIGGER ALL",
                "SET session_replication_role = replica"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), runtime_ctx.db.transaction() as conn:
            conn.execute(sql)
    with runtime_ctx.db.transaction() as conn:  # a row slipped in past the head, with a made-up hash
        conn.execute("INSERT INTO audit_events SELECT seq + 1, now(), NULL, 'mallory', 'approved', '{}',"
                     " hash, repeat('e', 64) FROM audit_head")
    assert not _verify(runtime_ctx).ok
    with runtime_ctx.db.transaction() as conn:  # the head moved by one (all its trigger allows) onto it
        conn.execute("UPDATE audit_head SET seq = seq + 1, hash = repeat('e', 64)")
    result = _verify(runtime_ctx)
    assert not result.ok and "was modified" in result.reason, result.reason


def test_anchoring_failure_never_blocks_a_run(spine_env: dict[str, str], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """An anchor file that cannot be written leaves runs working; verify warns about the unanchored events."""
    blocked = tmp_path / "not-a-file"
    blocked.mkdir()
    env = {**spine_env, "RUNBOOK_BOT_AUDIT_ANCHOR_FILE": str(blocked)}
    monkeypatch.setenv("RUNBOOK_BOT_AUDIT_ANCHOR_FILE", str(blocked))
    context = build_cli(Settings.from_env(env))
    try:
        res = context.service.request("echo", {"target": "api"}, op(context, "alice"))
        context.service.approve(res.run.id, op(context, "bob"))
        (done,) = drain(context)
        assert done.state.value == "succeeded"
        assert context.service.anchors is not None and context.service.anchors.failures > 0
        result = _verify(context)
        assert result.ok
        assert any("not anchored yet" in w for w in result.warnings), result.warnings
    finally:
        context.close()


# ----------------------------------------------------------------------------- S3 with Object Lock
@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 with an Object Lock bucket; AWS_* environment pointing at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for k, v in {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                 "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3").create_bucket(Bucket="trail", ObjectLockEnabledForBucket=True)
    try:
        yield "trail"
    finally:
        server.stop()


def test_s3_anchors_catch_a_rewrite_even_without_the_file(spine_env: dict[str, str], s3_bucket: str,
                                                          database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Anchors in an Object Lock bucket survive deleting the anchor file and delete attempts in S3."""
    monkeypatch.setenv("RUNBOOK_BOT_AUDIT_ANCHOR_S3", f"s3://{s3_bucket}/prod")
    context = build_cli(Settings.from_env({**os.environ}))
    try:
        n = _history(context)
        assert context.service.anchors is not None and context.service.anchors.flush()
        s3 = boto3.client("s3")
        versions = s3.list_object_versions(Bucket=s3_bucket, Prefix="prod/audit-anchors/")["Versions"]
        last = max(versions, key=lambda v: v["Key"])
        assert last["Key"].startswith(f"prod/audit-anchors/{n:012d}-")
        with pytest.raises(ClientError, match="AccessDenied"):  # COMPLIANCE retention: no version deletes
            s3.delete_object(Bucket=s3_bucket, Key=last["Key"], VersionId=last["VersionId"])
        s3.delete_object(Bucket=s3_bucket, Key=last["Key"])  # only hides it behind a delete marker
        (Path(spine_env["RUNBOOK_BOT_HOME"]) / "audit-anchors").unlink()
        with _as_superuser(database_url) as conn:
            _tail_delete(conn, n - 2)
        result = _verify(context)
        assert not result.ok, result
        assert f"s3://{s3_bucket}/prod/audit-anchors/{n:012d}-" in result.reason, result.reason
    finally:
        context.close()
