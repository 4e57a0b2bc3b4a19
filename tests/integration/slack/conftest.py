"""Fixtures for the Slack tests: a real `runbook-bot serve --http` over real PostgreSQL and ansible-runner,
talking to the fake Slack Web API (the Bot handle and launch() are in tests.support.slack_bot)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.slack_api import FakeSlack
from tests.support.slack_bot import Bot, running_bot


@pytest.fixture
def bot(tmp_path: Path, database_url: str) -> Iterator[Bot]:
    """`runbook-bot serve --http 0` in HTTP mode, Slack pointed at a fake Web API."""
    fake = FakeSlack().start()
    fake.usergroups["S0SRE"] = ["U0EVE"]
    with running_bot(tmp_path, database_url, fake) as running:
        yield running
