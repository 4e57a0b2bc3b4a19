"""scale-workers and rollout-undo through the real CLI spine: request (check-mode plan), approve, worker."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bot.errors import PlanError
from tests.fakes.kube_api import FakeKubeAPI
from tests.support.kube import deployment, rolled_out, set_image
from tests.support.paths import ROOT
from tests.support.spine import RealSpine, cli, op

pytestmark = pytest.mark.slow


@pytest.fixture
def env(spine_env: dict[str, str], kube: FakeKubeAPI, tmp_path: Path) -> dict[str, str]:
    """The spine over a catalog holding only the two Kubernetes runbooks (the real files)."""
    catalog = tmp_path / "runbooks"
    catalog.mkdir()
    for name in ("scale-workers.md", "rollout-undo.md"):
        shutil.copy(ROOT / "runbooks" / name, catalog / name)
    return {
        **spine_env,
        "RUNBOOK_BOT_RUNBOOKS": str(catalog),
        "RUNBOOK_BOT_PLAYBOOKS": str(ROOT / "playbooks"),
    }


def request_approve_work(env: dict[str, str], *args: str) -> dict[str, object]:
    req = cli(env, "request", *args, "--reason", "INC-7")
    assert req.returncode == 0, req.stderr
    run_id = req.stdout.strip()
    assert cli(env, "approve", run_id, user="bob").returncode == 0
    work = cli(env, "worker", "--once", timeout=240)
    assert f"[run {run_id}] succeeded" in work.stdout, work.stdout + work.stderr
    status: dict[str, object] = json.loads(cli(env, "status", run_id, "--json").stdout)
    return status


def test_scale_workers_through_the_cli(env: dict[str, str], kube: FakeKubeAPI) -> None:
    """An approved scale-workers run scales 3 -> 5 and stores the result on the run."""
    kube.apply(deployment("temporal-worker", "worker:1", replicas=3))
    kube.wait_until(lambda: rolled_out(kube, "prod", "temporal-worker"))
    status = request_approve_work(env, "scale-workers", "namespace=prod", "deployment=temporal-worker", "replicas=5")
    assert status["state"] == "succeeded"
    assert status["plan"] == ["deployment prod/temporal-worker replicas 3 -> 5"], status
    assert status["summary"] == ["prod/temporal-worker: 3 -> 5 replicas, 5/5 ready"], status
    dep = kube.get("Deployment", "prod", "temporal-worker")
    assert dep is not None and dep["status"]["readyReplicas"] == 5


def test_rollout_undo_through_the_cli(env: dict[str, str], kube: FakeKubeAPI) -> None:
    """An approved rollout-undo run restores the previous image."""
    kube.apply(deployment("api", "api:1"))
    kube.wait_until(lambda: rolled_out(kube, "prod", "api"))
    set_image(kube, "prod", "api", "api:2")
    status = request_approve_work(env, "rollout-undo", "namespace=prod", "deployment=api")
    assert status["state"] == "succeeded"
    assert status["plan"] == [
        "deployment prod/api roll back from revision 2 to the template of revision 1",
        "app image api:2 -> api:1",
    ], status
    dep = kube.get("Deployment", "prod", "api")
    assert dep is not None and dep["spec"]["template"]["spec"]["containers"][0]["image"] == "api:1"


def test_rollout_undo_without_a_cluster_names_kubeconfig(real_ctx: RealSpine, tmp_path: Path) -> None:
    """With no kubeconfig and no cluster, the plan error names KUBECONFIG and the inventory's kube_context."""
    ctx = real_ctx.build(KUBECONFIG="", K8S_AUTH_KUBECONFIG="", HOME=str(tmp_path))
    with pytest.raises(PlanError) as e:
        ctx.service.request("rollout-undo", {"namespace": "shop", "deployment": "api"}, op(ctx, "alice"))
    assert "no Kubernetes cluster to talk to: set KUBECONFIG" in str(e.value)
    assert "kube_context" in str(e.value)
