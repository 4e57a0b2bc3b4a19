"""Errors a newcomer hits say their cause: which setting is missing, which arguments, which parameter."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot.domain.runs import RunState
from bot.errors import PlanError
from bot.spine import Spine
from tests.integration.conftest import RealSpine, drain, op
from tests.integration.temporal.conftest import run_playbook

pytestmark = pytest.mark.slow


def test_rollout_undo_without_a_cluster_names_kubeconfig(real_ctx: RealSpine, tmp_path: Path) -> None:
    """With no kubeconfig and no cluster, the plan error names KUBECONFIG and the inventory's kube_context."""
    ctx = real_ctx.build(KUBECONFIG="", K8S_AUTH_KUBECONFIG="", HOME=str(tmp_path))
    with pytest.raises(PlanError) as e:
        ctx.service.request("rollout-undo", {"namespace": "shop", "deployment": "api"}, op(ctx, "alice"))
    assert "no Kubernetes cluster to talk to: set KUBECONFIG" in str(e.value)
    assert "kube_context" in str(e.value)


def test_restore_drill_argument_error_names_the_arguments(real_ctx: RealSpine) -> None:
    """validate_argument_spec's 'Validation of arguments failed:' keeps the argument names after it."""
    ctx = real_ctx.build()
    with pytest.raises(PlanError) as e:
        ctx.service.request("restore-drill", {}, op(ctx, "alice"))
    message = str(e.value)
    assert "Validation of arguments failed:" in message
    after = message.split("Validation of arguments failed:", 1)[1]
    assert "missing required arguments: scratch_dir" in after, message


def test_reset_stuck_workflows_error_names_visibility_query() -> None:
    """Without a selection, the error names the runbook's parameter visibility_query (not the module's `query`)."""
    run = run_playbook("127.0.0.1:1", {"reason": "INC-1"}, check=True)
    assert run.rc != 0
    text = " ".join(run.messages)
    assert "workflow_id, task_queue, visibility_query" in text, run.messages


def test_unwritable_work_dir_fails_the_run_naming_the_path(ctx: Spine) -> None:
    """An OSError while preparing a run (work dir gone bad, disk full) fails it with the path and why."""
    work = ctx.settings.work_dir
    shutil.rmtree(work)
    work.write_text("not a directory")
    res = ctx.service.request("hasty", {"seconds": "0"}, op(ctx, "alice"))
    [run] = drain(ctx)
    assert run.id == res.run.id and run.state is RunState.FAILED
    assert run.error is not None and str(work) in run.error and "Not a directory" in run.error
    assert "internal error" not in run.error
