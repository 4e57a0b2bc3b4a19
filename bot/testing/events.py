"""A bot.ports.RunEvents that remembers what it was told."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from bot.domain.ids import RunId
from bot.domain.runs import Run, RunEvent, RunState
from bot.execution.runner import Progress


@dataclass(frozen=True)
class Told:
    run_id: RunId
    event: RunEvent
    state: RunState  # the run's state as the event was told


class RecordingNotifier:
    """Subscribe it with `service.subscribe(notifier)`; `.told`, `.progress`, `.events(run_id)`."""

    def __init__(self) -> None:
        self.told: list[Told] = []
        self.progress: list[tuple[RunId, Progress]] = []
        self.runs: list[Run] = []  # the run as each event carried it
        self._lock = threading.Lock()

    def on_run(self, run: Run, event: RunEvent) -> None:
        with self._lock:
            self.told.append(Told(run.id, event, run.state))
            self.runs.append(run)

    def on_progress(self, run: Run, progress: Progress) -> None:
        with self._lock:
            self.progress.append((run.id, progress))

    def events(self, run_id: int) -> list[RunEvent]:
        with self._lock:
            return [t.event for t in self.told if t.run_id == run_id]
