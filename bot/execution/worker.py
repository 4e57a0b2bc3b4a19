"""The worker pool: its own threads (never a front end's listener threads) claim queued runs.

Several pools (several machines) share one database: claims use FOR UPDATE SKIP LOCKED. A heartbeat
thread keeps our running runs fresh and picks up cancel requests; a run whose worker stops heartbeating
is turned `interrupted` by whichever pool starts or sweeps next.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Protocol

from bot.domain.ids import RunId
from bot.domain.runs import Run
from bot.storage import runs as repo
from bot.storage.database import Database

log = logging.getLogger(__name__)


class Executor(Protocol):
    def execute_next(self, worker: str, tracker: _Tracker) -> Run | None: ...

    def recover_stale(self, stale_after_seconds: float) -> list[Run]: ...

    def expire_overdue(self) -> list[Run]: ...


class _Tracker:
    """Heartbeats the runs this pool executes and relays cancel requests to ansible-runner."""

    def __init__(self, db: Database, interval: float) -> None:
        self.db, self.interval = db, interval
        self._active: set[int] = set()
        self._cancel: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="runbook-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def track(self, run_id: RunId) -> Callable[[], bool]:
        with self._lock:
            self._active.add(run_id)
        return lambda: run_id in self._cancel

    def untrack(self, run_id: RunId) -> None:
        with self._lock:
            self._active.discard(run_id)
            self._cancel.discard(run_id)

    def beat(self) -> None:
        with self._lock:
            ids = sorted(self._active)
        if not ids:
            return
        with self.db.transaction() as conn:
            flags = repo.heartbeat(conn, ids)
        with self._lock:
            self._cancel.update(i for i, wanted in flags.items() if wanted and i in self._active)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:
                log.warning("heartbeat failed; retrying", exc_info=True)


class WorkerPool:
    def __init__(self, executor: Executor, db: Database, *, size: int = 2, poll_seconds: float = 0.5,
                 heartbeat_seconds: float = 2.0, stale_after_seconds: float = 30.0, name: str | None = None) -> None:
        self.executor, self.db = executor, db
        self.size, self.poll_seconds, self.stale_after = size, poll_seconds, stale_after_seconds
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.tracker = _Tracker(db, heartbeat_seconds)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._busy_lock = threading.Lock()
        self.finished: list[Run] = []

    def housekeeping(self) -> None:
        self.executor.recover_stale(self.stale_after)
        self.executor.expire_overdue()

    def _work_one(self, slot: int) -> Run | None:
        with self._busy_lock:
            self._busy += 1
        try:
            run = self.executor.execute_next(f"{self.name}/{slot}", self.tracker)
            if run is not None:
                self.finished.append(run)
            return run
        finally:
            with self._busy_lock:
                self._busy -= 1

    def _loop(self, slot: int, once: bool) -> None:
        while not self._stop.is_set():
            try:
                run = self._work_one(slot)
            except Exception:
                log.warning("worker %s: claim failed; retrying", slot, exc_info=True)
                run = None
            if run is None:
                if once:
                    return
                self._stop.wait(self.poll_seconds)

    def start(self, *, once: bool = False) -> None:
        """Recover stale runs, then start `size` worker threads (and the heartbeat)."""
        self.housekeeping()
        self.tracker.start()
        for slot in range(self.size):
            t = threading.Thread(target=self._loop, args=(slot, once), name=f"runbook-worker-{slot}", daemon=True)
            t.start()
            self._threads.append(t)

    def run_once(self) -> list[Run]:
        """Drain the queue (runs queued while draining are taken too), then return what finished."""
        self.start(once=True)
        for t in self._threads:
            t.join()
        self.tracker.stop()
        return self.finished

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=timeout)
        self.tracker.stop()
