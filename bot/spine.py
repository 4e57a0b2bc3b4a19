"""The spine every process kind is built around: settings, the database pool and the RunService over them.

bot.composition assembles it (one builder per process kind); front ends (bot.cli, bot.server,
bot.scheduler) receive it ready-made and never reach for module globals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.config import Settings
from bot.execution.worker import WorkerPool
from bot.service import RunService
from bot.storage.database import Database


@dataclass
class Spine:
    settings: Settings
    db: Database
    service: RunService
    warnings: list[str] = field(default_factory=list)  # operator warnings (serve/worker and audit verify show them)

    def worker_pool(self, size: int | None = None) -> WorkerPool:
        """A pool (not started) that executes this spine's queued runs; `size` slots, else RUNBOOK_BOT_WORKERS."""
        s = self.settings
        return WorkerPool(self.service, size=size or s.workers, poll_seconds=s.poll_seconds,
                          heartbeat_seconds=s.heartbeat_seconds, stale_after_seconds=s.stale_after_seconds)

    def close(self) -> None:
        if self.service.anchors is not None:
            self.service.anchors.close()  # background anchors (S3) get a bounded chance to finish
        self.db.close()
