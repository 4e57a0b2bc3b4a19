"""Anchor sinks and the anchorer, without a database: MAC'd lines, fail-open writes, coalesced S3 writes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bot.storage.anchors import Anchorer, AnchorRead, FileSink, anchor_mac

KEY = b"k" * 32


class _Head:
    """Stands in for Database: `transaction()` yields a connection whose query returns the head."""

    def __init__(self) -> None:
        self.seq, self.hash = 0, "0" * 64

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        head = self

        class _Conn:
            def execute(self, sql: str) -> Any:
                class _Row:
                    def fetchone(self) -> dict[str, object]:
                        return {"seq": head.seq, "hash": head.hash}
                return _Row()

        yield _Conn()

    def move(self, seq: int) -> None:
        self.seq, self.hash = seq, f"{seq:064x}"


class _Sink:
    def __init__(self, *, background: bool, min_interval: float = 0.0, fail: bool = False) -> None:
        self.source, self.background, self.min_interval, self.fail = "fake:", background, min_interval, fail
        self.written: list[int] = []

    def write(self, seq: int, digest: str, mac: str) -> None:
        if self.fail:
            raise OSError("disk full")
        assert mac == anchor_mac(KEY, seq, digest)
        self.written.append(seq)

    def read(self, key: bytes) -> AnchorRead:
        return AnchorRead(self.source)


def test_file_lines_are_macd_and_edits_are_reported(tmp_path: Path) -> None:
    """Each anchor line verifies under the key; an edited line, or another key, is reported as tampered."""
    sink = FileSink(tmp_path / "anchors")
    for seq in (1, 2, 3):
        sink.write(seq, f"{seq:064x}", anchor_mac(KEY, seq, f"{seq:064x}"))
    assert (tmp_path / "anchors").stat().st_mode & 0o777 == 0o600
    assert [a.seq for a in sink.read(KEY).anchors] == [1, 2, 3]
    lines = (tmp_path / "anchors").read_text().splitlines()
    edited = json.loads(lines[1]) | {"hash": "f" * 64}
    (tmp_path / "anchors").write_text("\n".join([lines[0], json.dumps(edited), lines[2]]) + "\n{\"seq\"")
    read = sink.read(KEY)
    assert [a.seq for a in read.anchors] == [1, 3]
    assert len(read.tampered) == 1 and "line 2: its MAC does not match" in read.tampered[0]
    assert any("incomplete" in n for n in read.notes)
    assert len(sink.read(b"other" * 8).tampered) == 3


def test_a_failing_sink_never_raises_and_is_counted() -> None:
    """A sink that fails is logged and counted; the caller (a run transition) carries on."""
    head, sink = _Head(), _Sink(background=False, fail=True)
    anchorer = Anchorer(head, KEY, [sink])  # type: ignore[arg-type]
    head.move(1)
    anchorer.after_commit(final=True)
    head.move(2)
    anchorer.after_commit(final=False)
    assert anchorer.failures == 2 and anchorer.last_error is not None and "disk full" in anchorer.last_error


def test_background_sink_coalesces_until_final_or_flush() -> None:
    """Non-final heads within min_interval wait (newest wins); a final one and a flush write at once."""
    head, sink = _Head(), _Sink(background=True, min_interval=3600)
    anchorer = Anchorer(head, KEY, [sink])  # type: ignore[arg-type]
    head.move(1)
    anchorer.after_commit(final=True)
    assert anchorer.flush(10) and sink.written == [1]
    for seq in (2, 3, 4):
        head.move(seq)
        anchorer.after_commit(final=False)
    head.move(5)
    anchorer.after_commit(final=True)
    anchorer.close(10)
    assert sink.written == [1, 5]
