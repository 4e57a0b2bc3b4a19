"""rotate-secret through the spine: two-person rule, real moto + PostgreSQL, secrets never stored or shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from bot.domain.runs import RunState
from bot.errors import SelfApproval
from tests.support.rotation import Scenario
from tests.support.spine import RealSpine, drain, op

pytestmark = pytest.mark.slow


def test_two_security_approvers_then_rotation(scenario: Scenario, aws_env: dict[str, str], real_ctx: RealSpine,
                                              database_url: str) -> None:
    """Needs two approvers from security (never the requester); the run rotates; the old value leaks nowhere."""
    s = scenario
    s.setup_db()
    s.create_secrets()
    ctx = real_ctx.build(**aws_env)
    res = ctx.service.request("rotate-secret", {"secret_id": s.secret_id, "kind": "postgres-role",
                                                "test_table": "orders"}, op(ctx, "alice"), reason="quarterly")
    assert res.run.lock_key == f"secret/{s.secret_id}"
    assert res.plan.check_output, "check mode shows the steps"
    with pytest.raises(SelfApproval):
        ctx.service.approve(res.run.id, op(ctx, "alice"))
    assert ctx.service.approve(res.run.id, op(ctx, "bob")).state is RunState.PENDING_APPROVAL
    assert ctx.service.approve(res.run.id, op(ctx, "carol")).state is RunState.QUEUED
    [done] = drain(ctx)
    assert done.state is RunState.SUCCEEDED, done.error
    new: dict[str, Any] = s.secret()
    assert s.can_login(s.user, new["password"]) and not s.can_login(s.user, s.canary)
    with psycopg.connect(database_url) as conn:
        for table in ("runs", "audit_events", "approvals"):
            dump = conn.execute(f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t").fetchone()
            assert dump is not None
            assert s.canary not in dump[0] and new["password"] not in dump[0], table
    home = Path(real_ctx.env["RUNBOOK_BOT_HOME"])
    for path in (home / "artifacts").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert s.canary.encode() not in data and new["password"].encode() not in data, path
