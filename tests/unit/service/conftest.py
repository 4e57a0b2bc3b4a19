"""RunService over the in-memory fakes of bot.testing: no PostgreSQL, no ansible-playbook."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot import testing
from bot.domain.catalog import Catalog, parse_runbook
from bot.domain.policy import Operator
from bot.service import RunService
from bot.storage.spool import OutcomeSpool

DIRECTORY = testing.directory({
    "operators": {"alice": {}, "bob": {}, "carol": {}, "dave": {}},
    "groups": {"sre": ["alice", "bob", "carol"]},
})
TARGET = {"type": "str", "required": True, "pattern": "^[a-z]+$"}
RUNBOOKS: list[dict[str, Any]] = [
    {"name": "echo", "title": "One approval", "playbook": "play.yml", "parameters": {"target": TARGET},
     "approval": {"required": 1, "approvers": ["group:sre"], "ttl": "1h"}, "lock": "echo/{target}"},
    {"name": "quorum", "title": "Two-person rule", "playbook": "play.yml", "parameters": {"target": TARGET},
     "approval": {"required": 2, "approvers": ["group:sre"]}},
    {"name": "planned", "title": "Check mode", "playbook": "play.yml", "parameters": {"target": TARGET},
     "approval": {"required": 1, "approvers": ["group:sre"]}, "check_mode": True},
    {"name": "free", "title": "No approval", "playbook": "play.yml", "parameters": {"target": TARGET},
     "approval": {"required": 0}, "lock": "free/{target}"},
    {"name": "nightly", "title": "Scheduled", "playbook": "play.yml", "schedule": "0 4 * * *",
     "approval": {"required": 1, "approvers": ["group:sre"], "scheduled": "preapproved"}},
]


@dataclass
class Spine:
    service: RunService
    store: testing.InMemoryRunStore
    runner: testing.ScriptedRunner
    clock: testing.ManualClock
    told: testing.RecordingNotifier
    playbook: Path

    def op(self, name: str) -> Operator:
        return DIRECTORY.operator(name)

    def execute(self) -> Any:
        """What one worker slot does: claim the oldest queued run and carry it to its final state."""
        return self.service.execute_next("test", testing.SyncTracker(self.service))


@pytest.fixture
def spine(tmp_path: Path) -> Iterator[Spine]:
    playbook = tmp_path / "playbooks" / "play.yml"
    playbook.parent.mkdir()
    playbook.write_text("- hosts: localhost\n  tasks: []\n")
    catalog = Catalog(parse_runbook(data, "", f"{data['name']}.md") for data in RUNBOOKS)
    clock = testing.ManualClock()
    store = testing.InMemoryRunStore(clock)
    runner = testing.ScriptedRunner()
    service = testing.run_service(catalog, DIRECTORY, playbook.parent, store=store, runner=runner, clock=clock,
                                  spool=OutcomeSpool(tmp_path / "outcomes"))
    told = testing.RecordingNotifier()
    service.subscribe(told)
    yield Spine(service, store, runner, clock, told, playbook)
