"""`runbook-bot scheduler`: the same server without Slack or workers (/healthz and /metrics only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.slack_api import running_fake_slack
from tests.support.slack_bot import launch, stop

pytestmark = pytest.mark.slow


def test_scheduler_verb_serves_health_without_slack(tmp_path: Path, database_url: str) -> None:
    """The scheduler process answers /healthz and /metrics, does not take Slack requests and stops on SIGTERM."""
    with running_fake_slack() as fake:
        proc = launch(tmp_path, database_url, fake, argv=("scheduler", "--http", "0"))
        try:
            status, body = proc.get("/healthz")
            assert status == 200 and '"ok"' in body
            status, text = proc.get("/metrics")
            assert status == 200 and "runbook_bot_queue_depth 0" in text
            body_, _ = proc.sender.command_body("U0ALICE", "list")
            assert proc.sender.post(body_, "application/x-www-form-urlencoded").status == 404
            assert any(line.startswith("scheduler: on") for line in proc.output)
            assert fake.calls == []
        finally:
            assert stop(proc.proc) == 0
