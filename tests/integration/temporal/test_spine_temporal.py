"""reset-stuck-workflows through the spine: request (check-mode plan) -> approve -> worker, real Temporal."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowExecutionStatus

from bot.domain.runs import RunState
from tests.support.spine import RealSpine, drain, op
from tests.support.temporal import TemporalServer, TemporalWorker, stuck_and_healthy

pytestmark = pytest.mark.slow


def test_reset_through_the_spine(temporal_server: TemporalServer, worker: TemporalWorker,
                                 real_ctx: RealSpine) -> None:
    """An SRE requests the reset, the approver sees the stuck workflow in the plan, the worker resets it."""
    ctx = real_ctx.build(TEMPORAL_ADDRESS=temporal_server.address)
    stuck, stuck_run, healthy, healthy_run = stuck_and_healthy(temporal_server, worker)
    params = {"task_queue": worker.task_queue, "min_activity_attempts": "2",
              "reason": "INC-7 gateway outage; reset (per runbook)"}
    res = ctx.service.request("reset-stuck-workflows", params, op(ctx, "alice"), reason="INC-7")
    assert res.run.lock_key == "temporal/default"
    assert any(stuck in line for line in res.plan.check_output or []), res.plan.check_output
    assert not any(healthy in line for line in res.plan.check_output or [])
    ctx.service.approve(res.run.id, op(ctx, "bob"))
    [done] = drain(ctx)
    assert done.state is RunState.SUCCEEDED, done.error
    [entry] = done.result["workflows"]
    assert (entry["workflow_id"], entry["run_id"], entry["status"]) == (stuck, stuck_run, "reset")
    assert temporal_server.reset_reason(stuck, entry["new_run_id"]) == "INC-7 gateway outage; reset (per runbook)"
    worker.fix("gateway")
    assert temporal_server.result(stuck, entry["new_run_id"]) == "charged gateway"
    assert temporal_server.describe(healthy)["status"] == WorkflowExecutionStatus.RUNNING
    assert temporal_server.describe(healthy)["run_id"] == healthy_run
