"""In-memory implementations of our ports, shipped with the package (like httpx.MockTransport), so tests of
anything built on RunService need neither PostgreSQL nor ansible-playbook, and no monkeypatching:

    from bot import testing

    clock = testing.ManualClock()
    store = testing.InMemoryRunStore(clock)
    runner = testing.ScriptedRunner().script(testing.failed("disk full"))
    service = testing.run_service(catalog, directory, playbooks_dir, store=store, runner=runner, clock=clock)
    notifier = testing.RecordingNotifier()
    service.subscribe(notifier)

- InMemoryRunStore (bot.ports.RunStore): lock keys, the run state machine, approvals with their MACed
  audit events (`store.events`, `store.actions(run_id)`), `go_down()` / `fail_next(n)` for a database
  that went away, `tamper(run_id, ...)` for a row changed behind the bot's back.
- ScriptedRunner (bot.ports.PlaybookRunner): returns the Outcomes it is given, records the Jobs.
- ManualClock (bot.ports.Clock): `advance(seconds)`; `sleep` advances instead of waiting.
- RecordingNotifier (bot.ports.RunEvents): the events and progress RunService told.
- SyncTracker: the worker pool's cancel relay, without its heartbeat thread.
- StaticSlackGroups (bot.domain.policy.SlackGroups), `directory(...)` (an operators file as a dict).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from bot.config import parse_directory
from bot.domain.catalog import Catalog
from bot.domain.ids import RunId
from bot.domain.policy import Directory, SlackGroups
from bot.errors import StorageError
from bot.execution.runner import StopCheck, StopRequest
from bot.ports import Clock
from bot.service import RunService
from bot.storage.keys import Keys
from bot.storage.spool import OutcomeSpool
from bot.storage.trail import AuditEvent
from bot.testing.clock import ManualClock
from bot.testing.events import RecordingNotifier, Told
from bot.testing.runner import ScriptedRunner, failed, outcome, succeeded
from bot.testing.store import InMemoryRunStore

__all__ = [
    "AuditEvent", "InMemoryRunStore", "ManualClock", "RecordingNotifier", "ScriptedRunner", "StaticSlackGroups",
    "SyncTracker", "Told", "directory", "failed", "outcome", "run_service", "succeeded",
]


class StaticSlackGroups:
    """A SlackGroups port with fixed membership; None for every group = a plan without user groups."""

    def __init__(self, groups: Mapping[str, set[str]] | None) -> None:
        self.groups = groups
        self.calls: list[str] = []

    def members(self, group_id: str) -> frozenset[str] | None:
        self.calls.append(group_id)
        if self.groups is None:
            return None
        return frozenset(self.groups.get(group_id, set()))


def directory(yaml_like: Mapping[str, object]) -> Directory:
    """A Directory from the same structure as the operators file."""
    return parse_directory(dict(yaml_like), "test operators")


class SyncTracker:
    """A CancelTracker that asks the service (heartbeat) each time a running job checks whether it must
    stop: a cancel recorded meanwhile is seen at once, as the worker pool's heartbeat thread relays it."""

    def __init__(self, service: RunService) -> None:
        self.service = service
        self.shutdown_why: str | None = None
        self.tracked: list[RunId] = []
        self.cancelled: set[int] = set()  # cancel seen once stays seen (as the pool's tracker keeps it)

    def shutdown(self, why: str) -> None:
        """Every tracked job is told the worker is stopping."""
        self.shutdown_why = why

    def track(self, run_id: RunId) -> StopCheck:
        self.tracked.append(run_id)

        def should_stop() -> StopRequest | None:
            if self.shutdown_why is not None:
                return StopRequest("shutdown", self.shutdown_why)
            try:
                if self.service.heartbeat([run_id]).get(run_id, False):
                    self.cancelled.add(run_id)
            except StorageError:  # the pool's heartbeat thread logs this and tries again later
                pass
            return StopRequest("cancel") if run_id in self.cancelled else None

        return should_stop

    def untrack(self, run_id: RunId) -> None:
        pass


def run_service(catalog: Catalog, directory: Directory, playbooks_dir: Path, *,
                store: InMemoryRunStore | None = None, runner: ScriptedRunner | None = None,
                clock: Clock | None = None, keys: Keys | None = None, spool: OutcomeSpool | None = None,
                slack_groups: SlackGroups | None = None) -> RunService:
    """A RunService over the in-memory fakes (the ones not given are made here, sharing one ManualClock)."""
    clock = clock or (store.clock if store is not None else ManualClock())
    return RunService(
        store=store or InMemoryRunStore(clock), catalog=catalog, directory=directory,
        keys=keys or Keys(b"bot.testing master key".ljust(32, b".")), runner=runner or ScriptedRunner(),
        playbooks_dir=playbooks_dir, inventory=playbooks_dir / "inventory", slack_groups=slack_groups,
        spool=spool, clock=clock,
    )
