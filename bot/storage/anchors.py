"""Anchors: the audit chain's head (seq + hash) copied outside PostgreSQL, so that whoever controls the
database (its owner, a superuser) cannot rewrite the chain unnoticed up to the last anchor.

A hash chain alone proves nothing against someone who can recompute it: deleting the tail and moving the
head back, or re-inserting a whole recomputed chain, leaves a chain that verifies. An anchor records
(seq, hash) somewhere the database's owner cannot rewrite, with a MAC under a key the database does not
hold (derived from the master key, bot.storage.keys). `audit verify` then requires, for every anchor it
can read, that the chain still has event `seq` with exactly that hash.

Sinks (each optional but the file, which is on by default):
- an append-only file (RUNBOOK_BOT_AUDIT_ANCHOR_FILE, default RUNBOOK_BOT_HOME/audit-anchors): one JSON
  line per anchor, written with O_APPEND, mode 0600, each line MAC'd (an edited line is reported);
- an S3 bucket with Object Lock (RUNBOOK_BOT_AUDIT_ANCHOR_S3=s3://bucket/prefix): one object per anchor,
  put with a COMPLIANCE retention (RUNBOOK_BOT_AUDIT_ANCHOR_S3_DAYS, default 400), its key carrying
  seq, hash and MAC so verification needs only a listing of every version (delete markers hide nothing).

Anchoring is fail-open: a sink that fails is logged, counted (`Anchorer.failures`, /metrics) and shows
up in `audit verify` as unanchored events; it never blocks or fails a run transition, which has already
committed when anchoring starts. The file is written synchronously after every transition; S3 from a
background thread after every final transition and at most once a minute otherwise (the newest head),
and on exit (flush).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from bot.errors import ConfigError
from bot.storage.database import Database

log = logging.getLogger(__name__)

_MAC_CONTEXT = "runbook-bot audit anchor v1"


def anchor_mac(key: bytes, seq: int, digest: str) -> str:
    """The MAC binding an anchored (seq, hash) to the key: without the key no valid anchor can be made."""
    return hmac.new(key, f"{_MAC_CONTEXT}|{seq}|{digest}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str
    where: str  # e.g. "/home/bot/audit-anchors line 3"


@dataclass
class AnchorRead:
    """What one sink holds: valid anchors, entries whose MAC fails (tampering), or why it could not be read."""

    source: str
    anchors: list[Anchor] = field(default_factory=list)
    tampered: list[str] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)


class AnchorSink(Protocol):
    source: str
    min_interval: float  # seconds between anchors of non-final events (final transitions always anchor)
    background: bool

    def write(self, seq: int, digest: str, mac: str) -> None: ...

    def read(self, key: bytes) -> AnchorRead: ...


class FileSink:
    """Append-only JSON lines; each line `{"seq", "hash", "at", "host", "mac"}` (the MAC covers seq + hash)."""

    min_interval = 0.0
    background = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self.source = f"file:{path}"

    def write(self, seq: int, digest: str, mac: str) -> None:
        line = json.dumps({"seq": seq, "hash": digest, "at": datetime.now(UTC).isoformat(timespec="seconds"),
                           "host": socket.gethostname(), "mac": mac}, sort_keys=True) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())  # one write of one short line with O_APPEND: never interleaved
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self, key: bytes) -> AnchorRead:
        out = AnchorRead(self.source)
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            out.notes.append(f"{self.path} does not exist (nothing anchored here yet)")
            return out
        except OSError as e:
            out.error = f"cannot read {self.path}: {e.strerror}"
            return out
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        elif lines:
            out.notes.append(f"{self.path}: the last line is incomplete (a write was cut short); ignored")
            lines.pop()
        for n, raw in enumerate(lines, 1):
            where = f"{self.path} line {n}"
            try:
                rec = json.loads(raw)
                seq, digest, mac = int(rec["seq"]), str(rec["hash"]), str(rec["mac"])
            except (ValueError, KeyError, TypeError):
                out.tampered.append(f"{where} is not an anchor record (the file was edited)")
                continue
            if not hmac.compare_digest(mac, anchor_mac(key, seq, digest)):
                out.tampered.append(f"{where}: its MAC does not match (the file was edited, or written under "
                                    "another RUNBOOK_BOT_SECRET_KEY)")
                continue
            out.anchors.append(Anchor(seq, digest, where))
        return out


class S3Sink:
    """One Object Lock'ed object per anchor: `<prefix>audit-anchors/<seq>-<hash>-<mac>.json`."""

    min_interval = 60.0
    background = True

    def __init__(self, url: str, *, retention_days: int = 400, client: Any = None) -> None:
        if not url.startswith("s3://") or not url[5:].split("/", 1)[0]:
            raise ConfigError(f"RUNBOOK_BOT_AUDIT_ANCHOR_S3 must look like s3://bucket/prefix, got {url!r}")
        bucket, _, prefix = url[5:].partition("/")
        self.bucket = bucket
        self.prefix = (prefix.rstrip("/") + "/" if prefix else "") + "audit-anchors/"
        self.source = f"s3://{bucket}/{self.prefix}"
        self.retention_days = retention_days
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            # Short timeouts and few retries: anchoring must not hold up the thread that reports a run.
            self._client = boto3.client("s3", config=Config(connect_timeout=3, read_timeout=5,
                                                            retries={"max_attempts": 2, "mode": "standard"}))
        return self._client

    def write(self, seq: int, digest: str, mac: str) -> None:
        until = datetime.now(UTC) + timedelta(days=self.retention_days)
        body = json.dumps({"seq": seq, "hash": digest, "mac": mac, "host": socket.gethostname(),
                           "at": datetime.now(UTC).isoformat(timespec="seconds")}, sort_keys=True)
        self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}{seq:012d}-{digest}-{mac}.json",
                               Body=body.encode(), ContentType="application/json",
                               ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until,
                               ChecksumAlgorithm="SHA256")  # Object Lock puts need a checksum

    def read(self, key: bytes) -> AnchorRead:
        out = AnchorRead(self.source)
        try:
            pages = self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket,
                                                                               Prefix=self.prefix)
            seen: set[str] = set()
            for page in pages:
                for marker in page.get("DeleteMarkers", []):
                    out.notes.append(f"s3://{self.bucket}/{marker['Key']} has a delete marker; its locked "
                                     "versions are still read")
                for version in page.get("Versions", []):
                    name = str(version["Key"])
                    if name in seen:
                        continue  # the same anchor put twice: same key, several versions
                    seen.add(name)
                    where = f"s3://{self.bucket}/{name}"
                    try:
                        seq_s, digest, mac = name[len(self.prefix):].removesuffix(".json").split("-")
                        seq = int(seq_s)
                    except ValueError:
                        out.tampered.append(f"{where} is not an anchor object")
                        continue
                    if not hmac.compare_digest(mac, anchor_mac(key, seq, digest)):
                        out.tampered.append(f"{where}: its MAC does not match (not written by this bot's key)")
                        continue
                    out.anchors.append(Anchor(seq, digest, where))
        except Exception as e:  # noqa: BLE001 - botocore raises many types; each means "not readable now"
            out.error = f"cannot list {self.source}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return out


class Anchorer:
    """Writes the chain head to every sink after a transition commits (fail-open), reads them for verify.

    A synchronous sink (the file) is written in the caller's thread. A background sink (S3) gets the
    newest head through a one-slot mailbox: written at once after a final transition, otherwise at most
    once per `min_interval` (the newest head then, so nothing is skipped for good), and at once on flush.
    """

    def __init__(self, db: Database, key: bytes, sinks: Iterable[AnchorSink]) -> None:
        self.db, self.key, self.sinks = db, key, list(sinks)
        self.failures = 0
        self.last_error: str | None = None
        self._by_source = {s.source: s for s in self.sinks}
        self._last_seq: dict[str, int] = {}
        self._last_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: dict[str, tuple[int, str, str, bool]] = {}  # source -> (seq, hash, mac, final)
        self._busy = False
        self._hurry = 0  # flushes waiting: write pending anchors now
        self._closed = False
        self._thread: threading.Thread | None = None

    def after_commit(self, *, final: bool) -> None:
        """Anchor the current head: always after a final transition, else per sink's min_interval."""
        if not self.sinks:
            return
        try:
            with self.db.transaction() as conn:
                row = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        except Exception as e:  # noqa: BLE001 - anchoring is fail-open: logged and counted, never raised
            self._failed("database", e)
            return
        if row is None or int(row["seq"]) == 0:
            return
        seq, digest = int(row["seq"]), str(row["hash"])
        mac = anchor_mac(self.key, seq, digest)
        now = time.monotonic()
        for sink in self.sinks:
            with self._lock:
                if seq <= self._last_seq.get(sink.source, 0):
                    continue
                if sink.background:
                    earlier = self._pending.get(sink.source)
                    if earlier is None or earlier[0] < seq:
                        self._pending[sink.source] = (seq, digest, mac, final or bool(earlier and earlier[3]))
                    self._ensure_thread()
                    self._wake.notify_all()
                    continue
                if not final and now - self._last_at.get(sink.source, float("-inf")) < sink.min_interval:
                    continue
                self._last_seq[sink.source], self._last_at[sink.source] = seq, now
            self._write(sink, seq, digest, mac)

    def _write(self, sink: AnchorSink, seq: int, digest: str, mac: str) -> None:
        try:
            sink.write(seq, digest, mac)
        except Exception as e:  # noqa: BLE001 - anchoring is fail-open: logged and counted, never raised
            with self._lock:
                if self._last_seq.get(sink.source) == seq:
                    del self._last_seq[sink.source]  # try again at the next transition
            self._failed(sink.source, e)

    def _failed(self, where: str, e: Exception) -> None:
        self.failures += 1
        self.last_error = f"{where}: {type(e).__name__}: {e}"
        log.warning("audit anchor to %s failed (the run is unaffected; `audit verify` will show the gap): %s",
                    where, e)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="audit-anchor", daemon=True)
            self._thread.start()

    def _next_due(self) -> tuple[str | None, float | None]:
        """(a pending source to write now, or None; else seconds until the next one is due)."""
        now, wait = time.monotonic(), None
        for source, (_, _, _, final) in self._pending.items():
            due = self._last_at.get(source, float("-inf")) + self._by_source[source].min_interval
            if final or self._hurry or self._closed or now >= due:
                return source, None
            wait = due - now if wait is None else min(wait, due - now)
        return None, wait

    def _loop(self) -> None:
        while True:
            with self._lock:
                while True:
                    if self._closed and not self._pending:
                        return
                    source, wait = self._next_due()
                    if source is not None:
                        break
                    self._wake.wait(wait)
                seq, digest, mac, _ = self._pending.pop(source)
                self._last_seq[source], self._last_at[source] = seq, time.monotonic()
                self._busy = True
            try:
                self._write(self._by_source[source], seq, digest, mac)
            finally:
                with self._lock:
                    self._busy = False
                    self._wake.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Write pending background anchors now; True once written (or failed), False after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._hurry += 1
            self._wake.notify_all()
            try:
                while self._pending or self._busy:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._thread is None or not self._thread.is_alive():
                        return False
                    self._wake.wait(left)
                return True
            finally:
                self._hurry -= 1

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        with self._lock:
            self._closed = True
            self._wake.notify_all()

    def read_all(self) -> list[AnchorRead]:
        return [sink.read(self.key) for sink in self.sinks]

    def metrics(self) -> list[str]:
        return ["# HELP runbook_bot_audit_anchor_failures_total Anchor writes that failed (fail-open).",
                "# TYPE runbook_bot_audit_anchor_failures_total counter",
                f"runbook_bot_audit_anchor_failures_total {self.failures}"]


def sinks_from_settings(anchor_file: Path | None, anchor_s3: str | None,
                        env: Mapping[str, str] | None = None) -> list[AnchorSink]:
    env = os.environ if env is None else env
    sinks: list[AnchorSink] = []
    if anchor_file is not None:
        sinks.append(FileSink(anchor_file))
    if anchor_s3:
        raw = env.get("RUNBOOK_BOT_AUDIT_ANCHOR_S3_DAYS") or "400"
        try:
            days = int(raw)
        except ValueError:
            raise ConfigError(f"RUNBOOK_BOT_AUDIT_ANCHOR_S3_DAYS must be a whole number, got {raw!r}") from None
        sinks.append(S3Sink(anchor_s3, retention_days=days))
    return sinks
