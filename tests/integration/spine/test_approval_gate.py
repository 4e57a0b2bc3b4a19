"""The worker executes only what was approved: it re-checks approvals (tables AND audit chain) against the
runbook's current policy just before running, and refuses, audited, anything else."""

from __future__ import annotations

import pytest

from bot.app import Context
from bot.domain.runs import RunState
from bot.storage import audit
from tests.integration.conftest import drain, op, ran

pytestmark = pytest.mark.slow


def _sql(ctx: Context, sql: str, *args: object) -> None:
    """Tamper through the bot's own database connection (what someone holding DATABASE_URL can do)."""
    with ctx.db.transaction() as conn:
        conn.execute(sql, args)


def _refused(ctx: Context, spine_env: dict[str, str], run_id: int) -> str:
    (done,) = drain(ctx)
    assert done.id == run_id
    assert done.state is RunState.FAILED
    assert done.error is not None and done.error.startswith("refused: not approved: "), done.error
    assert ran(spine_env) == []  # neither the playbook nor its check mode ran
    with ctx.db.transaction() as conn:
        last = audit.events_for_run(conn, run_id)[-1]
    assert (last.action, last.body.get("refused")) == ("failed", "not_approved")
    assert audit.verify(ctx.db).ok
    return done.error


def test_row_set_to_queued_by_hand_is_refused(ctx: Context, spine_env: dict[str, str]) -> None:
    """A pending run moved to `queued` with one UPDATE is refused by the worker, audited, and nothing runs."""
    res = ctx.service.request("echo", {"target": "api"}, op(ctx, "alice"))
    _sql(ctx, "UPDATE runs SET state = 'queued' WHERE id = %s", res.run.id)
    assert "needs 1 approval(s)" in _refused(ctx, spine_env, res.run.id)


def test_forged_approvals_row_without_audit_event_is_refused(ctx: Context, spine_env: dict[str, str]) -> None:
    """An approvals row inserted by hand (no `approved` event in the chain) does not count."""
    res = ctx.service.request("echo", {"target": "api"}, op(ctx, "alice"))
    _sql(ctx, "INSERT INTO approvals (run_id, approver, decision) VALUES (%s, 'bob', 'approve')", res.run.id)
    _sql(ctx, "UPDATE runs SET state = 'queued' WHERE id = %s", res.run.id)
    assert "bob: in the approvals table but not in the audit trail" in _refused(ctx, spine_env, res.run.id)


def test_lowered_approval_count_in_the_row_is_refused(ctx: Context, spine_env: dict[str, str]) -> None:
    """approvals_required edited down in the row does not lower the runbook's two-person rule."""
    res = ctx.service.request("quorum", {"target": "api"}, op(ctx, "alice"))
    ctx.service.approve(res.run.id, op(ctx, "bob"))
    _sql(ctx, "UPDATE runs SET approvals_required = 1, state = 'queued' WHERE id = %s", res.run.id)
    assert "needs 2 approval(s) under the runbook's current policy, has 1 valid" in _refused(
        ctx, spine_env, res.run.id)


def test_row_made_to_look_scheduled_is_refused(ctx: Context, spine_env: dict[str, str]) -> None:
    """A CLI request dressed up as a preapproved scheduled run (source + schedule_key edited) is refused."""
    res = ctx.service.request("nightly", {}, op(ctx, "alice"))
    _sql(ctx, "UPDATE runs SET source = 'scheduler', schedule_key = 'nightly@x', state = 'queued' WHERE id = %s",
         res.run.id)
    _refused(ctx, spine_env, res.run.id)


def test_plan_hash_swapped_in_the_row_is_refused(ctx: Context, spine_env: dict[str, str]) -> None:
    """An approved run whose row plan hash was replaced no longer matches what was requested and approved."""
    res = ctx.service.request("echo", {"target": "api"}, op(ctx, "alice"))
    ctx.service.approve(res.run.id, op(ctx, "bob"))
    _sql(ctx, "UPDATE runs SET plan_hash = repeat('a', 64) WHERE id = %s", res.run.id)
    assert "plan hash differs" in _refused(ctx, spine_env, res.run.id)


def test_properly_approved_and_scheduled_runs_still_execute(ctx: Context, spine_env: dict[str, str]) -> None:
    """The gate lets an approved run and a preapproved scheduled run through."""
    res = ctx.service.request("echo", {"target": "api"}, op(ctx, "alice"))
    ctx.service.approve(res.run.id, op(ctx, "bob"))
    sched = ctx.service.request("nightly", {}, op(ctx, "alice"), source="scheduler",
                                schedule_key="nightly@2026-01-01T04:00:00+00:00", preapproved=True)
    done = {r.id: r for r in drain(ctx)}
    assert done[res.run.id].state is RunState.SUCCEEDED, done[res.run.id].error
    assert done[sched.run.id].state is RunState.SUCCEEDED, done[sched.run.id].error
