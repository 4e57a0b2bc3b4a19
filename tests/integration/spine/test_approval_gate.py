"""The worker executes only what was approved: it re-checks approvals (tables AND audit chain) against the
runbook's current policy just before running, and refuses, audited, anything else."""

from __future__ import annotations

import pytest

from bot.domain.runs import RunState
from bot.spine import Spine
from bot.storage import audit
from tests.support.spine import cli, drain, op, ran

pytestmark = pytest.mark.slow


def _sql(ctx: Spine, sql: str, *args: object) -> None:
    """Tamper through the bot's own database connection (what someone holding DATABASE_URL can do)."""
    with ctx.db.transaction() as conn:
        conn.execute(sql, args)


def _refused(ctx: Spine, spine_env: dict[str, str], run_id: int) -> str:
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


def test_row_set_to_queued_by_hand_is_refused(ctx: Spine, spine_env: dict[str, str]) -> None:
    """A pending run moved to `queued` with one UPDATE is refused by the worker, audited, and nothing runs."""
    res = ctx.service.request("echo", {"target": "api"}, op(ctx, "alice"))
    _sql(ctx, "UPDATE runs SET state = 'queued' WHERE id = %s", res.run.id)
    assert "needs 1 approval(s)" in _refused(ctx, spine_env, res.run.id)


def test_worker_command_refuses_a_hand_queued_run_and_verify_stays_intact(ctx: Spine,
                                                                          spine_env: dict[str, str]) -> None:
    """`runbook-bot worker --once` refuses the hand-queued run; `audit verify` exits 0 and records the refusal."""
    res = ctx.service.request("echo", {"target": "api"}, op(ctx, "alice"))
    _sql(ctx, "UPDATE runs SET state = 'queued' WHERE id = %s", res.run.id)
    work = cli(spine_env, "worker", "--once")
    assert work.returncode == 0, work.stderr
    run = ctx.service.get(res.run.id)
    assert run.state is RunState.FAILED and run.error is not None
    assert run.error.startswith("refused: not approved: needs 1 approval(s)"), run.error
    assert ran(spine_env) == []
    assert cli(spine_env, "audit", "verify").returncode == 0


def test_forged_approvals_row_without_audit_event_is_refused(ctx: Spine, spine_env: dict[str, str]) -> None:
    """An approvals row inserted by hand (no `approved` event in the chain) does not count."""
    res = ctx.service.request("echo", {"target": "api"}, op(ctx, "alice"))
    _sql(ctx, "INSERT INTO approvals (run_id, approver, decision) VALUES (%s, 'bob', 'approve')", res.run.id)
    _sql(ctx, "UPDATE runs SET state = 'queued' WHERE id = %s", res.run.id)
    assert "bob: in the approvals table but not in the audit trail" in _refused(ctx, spine_env, res.run.id)


def test_lowered_approval_count_in_the_row_is_refused(ctx: Spine, spine_env: dict[str, str]) -> None:
    """approvals_required edited down in the row does not lower the runbook's two-person rule."""
    res = ctx.service.request("quorum", {"target": "api"}, op(ctx, "alice"))
    ctx.service.approve(res.run.id, op(ctx, "bob"))
    _sql(ctx, "UPDATE runs SET approvals_required = 1, state = 'queued' WHERE id = %s", res.run.id)
    assert "needs 2 approval(s) under the runbook's current policy, has 1 valid" in _refused(
        ctx, spine_env, res.run.id)


def test_row_made_to_look_scheduled_is_refused(ctx: Spine, spine_env: dict[str, str]) -> None:
    """A CLI request dressed up as a preapproved scheduled run (source + schedule_key edited) is refused."""
    res = ctx.service.request("nightly", {}, op(ctx, "alice"))
    _sql(ctx, "UPDATE runs SET source = 'scheduler', schedule_key = 'nightly@x', state = 'queued' WHERE id = %s",
         res.run.id)
    _refused(ctx, spine_env, res.run.id)


def test_plan_hash_swapped_in_the_row_is_refused(ctx: Spine, spine_env: dict[str, str]) -> None:
    """An approved run whose row plan hash was replaced no longer matches what was requested and approved."""
    res = ctx.service.request("echo", {"target": "api"}, op(ctx, "alice"))
    ctx.service.approve(res.run.id, op(ctx, "bob"))
    _sql(ctx, "UPDATE runs SET plan_hash = repeat('a', 64) WHERE id = %s", res.run.id)
    assert "plan hash differs" in _refused(ctx, spine_env, res.run.id)


def test_approval_forged_through_the_bots_own_append_is_refused(ctx: Spine, spine_env: dict[str, str]) -> None:
    """An `approved` event appended with the database credentials alone (no master key) has no valid MAC."""
    res = ctx.service.request("echo", {"target": "api"}, op(ctx, "alice"))
    with ctx.db.transaction() as conn:
        conn.execute("INSERT INTO approvals (run_id, approver, decision) VALUES (%s, 'bob', 'approve')",
                     (res.run.id,))
        audit.append(conn, actor="bob", action="approved", run_id=res.run.id,
                     body={"comment": "", "plan_hash": res.run.plan_hash, "mac": "0" * 64})
        conn.execute("UPDATE runs SET state = 'queued' WHERE id = %s", (res.run.id,))
    assert "bob: the approval's MAC does not match" in _refused(ctx, spine_env, res.run.id)


def test_request_forged_through_the_bots_own_append_is_refused(ctx: Spine, spine_env: dict[str, str]) -> None:
    """A whole run forged with the database credentials (row + `requested` + `queued` events) is refused."""
    real = ctx.service.request("nightly", {}, op(ctx, "alice"))
    with ctx.db.transaction() as conn:
        row = conn.execute(
            "INSERT INTO runs (runbook, state, params, requested_by, source, plan, plan_hash, approvals_required,"
            " schedule_key) SELECT runbook, 'queued', params, 'scheduler', 'scheduler', plan, plan_hash, 0,"
            " 'nightly@forged' FROM runs WHERE id = %s RETURNING id", (real.run.id,)).fetchone()
        assert row is not None
        forged = int(row["id"])
        audit.append(conn, actor="scheduler", action="requested", run_id=forged,
                     body={"runbook": "nightly", "source": "scheduler", "plan_hash": real.run.plan_hash,
                           "schedule_key": "nightly@forged"})
    ctx.service.cancel(real.run.id, op(ctx, "alice"))
    assert "`requested` event's MAC does not match" in _refused(ctx, spine_env, forged)


def test_properly_approved_and_scheduled_runs_still_execute(ctx: Spine, spine_env: dict[str, str]) -> None:
    """The gate lets an approved run and a preapproved scheduled run through."""
    res = ctx.service.request("echo", {"target": "api"}, op(ctx, "alice"))
    ctx.service.approve(res.run.id, op(ctx, "bob"))
    sched = ctx.service.request("nightly", {}, op(ctx, "alice"), source="scheduler",
                                schedule_key="nightly@2026-01-01T04:00:00+00:00", preapproved=True)
    done = {r.id: r for r in drain(ctx)}
    assert done[res.run.id].state is RunState.SUCCEEDED, done[res.run.id].error
    assert done[sched.run.id].state is RunState.SUCCEEDED, done[sched.run.id].error
