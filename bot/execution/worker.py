"""The worker pool: its own threads (never a front end's listener threads) claim queued runs.

Several pools (several machines) share one database: claims use FOR UPDATE SKIP LOCKED. A heartbeat
thread keeps our running runs fresh and picks up cancel requests; a run whose worker stops heartbeating
is turned `interrupted` by the next sweep on its own host, once its processes are gone. `stop(why)`
(SIGTERM/SIGINT of `serve`/`worker`) stops claiming, ends the running runs' process trees and records
them `interrupted` with `why` before it returns.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from bot.domain.ids import RunId
from bot.domain.runs import Run
from bot.execution.runner import StopCheck, StopRequest

log = logging.getLogger(__name__)


class Executor(Protocol):
    def execute_next(self, worker: str, tracker: _Tracker) -> Run | None: ...  # _Tracker is a CancelTracker

    def recover_stale(self, stale_after_seconds: float) -> list[Run]: ...

    def expire_overdue(self) -> list[Run]: ...

    def heartbeat(self, run_ids: Sequence[int]) -> dict[int, bool]: ...  # run id -> cancel requested


class _Tracker:
    """Heartbeats the runs this pool executes and relays cancel requests to ansible-runner."""

    def __init__(self, heartbeat: Callable[[Sequence[int]], dict[int, bool]], interval: float) -> None:
        self.heartbeat, self.interval = heartbeat, interval
        self._active: set[int] = set()
        self._cancel: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._shutdown: StopRequest | None = None
        self._thread = threading.Thread(target=self._loop, name="runbook-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def shutdown(self, why: str) -> None:
        """Every tracked run is told to stop (its processes are ended, it is recorded interrupted)."""
        self._shutdown = StopRequest("shutdown", why)

    def track(self, run_id: RunId) -> StopCheck:
        with self._lock:
            self._active.add(run_id)

        def should_stop() -> StopRequest | None:
            if self._shutdown is not None:
                return self._shutdown
            return StopRequest("cancel") if run_id in self._cancel else None

        return should_stop

    def untrack(self, run_id: RunId) -> None:
        with self._lock:
            self._active.discard(run_id)
            self._cancel.discard(run_id)

    def beat(self) -> None:
        with self._lock:
            ids = sorted(self._active)
        if not ids:
            return
        flags = self.heartbeat(ids)
        with self._lock:
            self._cancel.update(i for i, wanted in flags.items() if wanted and i in self._active)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:
                log.warning("heartbeat failed; retrying", exc_info=True)


class WorkerPool:
    def __init__(self, executor: Executor, *, size: int = 2, poll_seconds: float = 0.5,
                 heartbeat_seconds: float = 2.0, stale_after_seconds: float = 30.0, name: str | None = None) -> None:
        self.executor = executor
        self.size, self.poll_seconds, self.stale_after = size, poll_seconds, stale_after_seconds
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.tracker = _Tracker(executor.heartbeat, heartbeat_seconds)
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

    def interrupt(self, why: str) -> None:
        """Stop claiming and tell running runs to stop (safe to call from a signal handler)."""
        self._stop.set()
        self.tracker.shutdown(why)

    def stop(self, timeout: float = 60.0, why: str = "the worker stopped") -> None:
        """Stop claiming; end running runs (their whole process trees) and record them before returning."""
        self.interrupt(why)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        self.tracker.stop()
