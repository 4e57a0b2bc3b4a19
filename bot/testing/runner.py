"""A bot.ports.PlaybookRunner that runs nothing: it returns the Outcomes it was given and records the Jobs.

    runner = ScriptedRunner()
    runner.script(succeeded(stats={"summary": ["done"]}))      # the next real (not check-mode) job
    runner.check(succeeded(stats={"plan": ["would restart"]}))  # the next check-mode job
    runner.script(lambda job, should_stop: ...)                 # a step: act, then return an Outcome

Unscripted jobs succeed. A step that must be stopped (cancel, worker shutdown) returns
`ScriptedRunner.stopped(should_stop)`: the Outcome AnsibleRunner gives for the stop it was asked.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bot.execution.runner import Job, Outcome, ProcessesSink, Progress, ProgressSink, StopCheck

Step = Outcome | Callable[[Job, StopCheck], Outcome]


def outcome(status: str = "successful", *, rc: int | None = 0, stats: dict[str, Any] | None = None,
            changes: Sequence[dict[str, Any]] = (), failures: Sequence[str] = (), stop_why: str = "") -> Outcome:
    """An Outcome as AnsibleRunner returns it (status: successful | failed | timeout | canceled | interrupted)."""
    return Outcome(status, rc, dict(stats or {}), list(changes), list(failures), None, stop_why)


def succeeded(*, stats: dict[str, Any] | None = None, changes: Sequence[dict[str, Any]] = ()) -> Outcome:
    return outcome(stats=stats, changes=changes)


def failed(*failures: str, rc: int = 2, stats: dict[str, Any] | None = None) -> Outcome:
    return outcome("failed", rc=rc, failures=failures, stats=stats)


class ScriptedRunner:
    def __init__(self, *, kill_grace_seconds: float = 0.0) -> None:
        self.kill_grace_seconds = kill_grace_seconds
        self.jobs: list[Job] = []  # every job asked for, check mode included, in order
        self.discarded: list[tuple[str, list[str]]] = []  # discard_run_files(ident, secrets) calls
        self._runs: deque[Step] = deque()
        self._checks: deque[Step] = deque()
        self._lock = threading.Lock()

    def script(self, *steps: Step) -> ScriptedRunner:
        """What the next real (not check-mode) jobs do, in order."""
        with self._lock:
            self._runs.extend(steps)
        return self

    def check(self, *steps: Step) -> ScriptedRunner:
        """What the next check-mode jobs do, in order."""
        with self._lock:
            self._checks.extend(steps)
        return self

    @property
    def real_jobs(self) -> list[Job]:
        return [j for j in self.jobs if not j.check]

    @staticmethod
    def stopped(should_stop: StopCheck) -> Outcome:
        """The Outcome of a job asked to stop: canceled, or interrupted with the shutdown's reason."""
        request = should_stop()
        if request is None:
            raise AssertionError("the scripted job expected to be stopped, but nothing asked it to stop")
        if request.kind == "cancel":
            return outcome("canceled", rc=None)
        return outcome("interrupted", rc=None, stop_why=request.why)

    def run(self, job: Job, *, on_progress: ProgressSink | None = None, should_stop: StopCheck = lambda: None,
            on_processes: ProcessesSink | None = None) -> Outcome:
        with self._lock:
            self.jobs.append(job)
            queue = self._checks if job.check else self._runs
            step: Step = queue.popleft() if queue else succeeded()
        if on_progress is not None and not job.check:
            on_progress(Progress(job.ident, "play", f"PLAY [{Path(job.playbook).name}]"))
        return step(job, should_stop) if callable(step) else step

    def discard_run_files(self, ident: str, secrets: list[str]) -> None:
        self.discarded.append((ident, list(secrets)))
