"""scale_workers.yml run for real with ansible-playbook against the fake Kubernetes API."""

from __future__ import annotations

import pytest

from tests.fakes.kube_api import FakeKubeAPI
from tests.support.kube import deployment, rolled_out
from tests.support.playbooks import run_playbook

pytestmark = pytest.mark.slow


@pytest.fixture
def worker(kube: FakeKubeAPI) -> FakeKubeAPI:
    kube.apply(deployment("temporal-worker", "worker:1.4.2", replicas=3))
    kube.wait_until(lambda: rolled_out(kube, "prod", "temporal-worker"))
    return kube


def test_scale_up_waits_until_ready(worker: FakeKubeAPI) -> None:
    """Scaling 3 -> 5 leaves five ready pods and reports before -> after."""
    run = run_playbook("scale_workers.yml", {"namespace": "prod", "deployment": "temporal-worker", "replicas": 5})
    assert run.rc == 0, run.output
    dep = worker.get("Deployment", "prod", "temporal-worker")
    assert dep is not None
    assert dep["spec"]["replicas"] == 5
    assert dep["status"]["readyReplicas"] == 5
    assert run.stats["summary"] == ["prod/temporal-worker: 3 -> 5 replicas, 5/5 ready"]
    assert run.stats["result"]["replicas_before"] == 3
    assert run.stats["result"]["ready_replicas"] == 5


def test_check_mode_reports_the_plan_and_changes_nothing(worker: FakeKubeAPI) -> None:
    """Check mode prints the plan line and leaves spec.replicas and the resourceVersion alone."""
    before = worker.get("Deployment", "prod", "temporal-worker")
    assert before is not None
    run = run_playbook(
        "scale_workers.yml", {"namespace": "prod", "deployment": "temporal-worker", "replicas": 5}, check=True
    )
    assert run.rc == 0, run.output
    assert run.stats["plan"] == ["deployment prod/temporal-worker replicas 3 -> 5"]
    after = worker.get("Deployment", "prod", "temporal-worker")
    assert after is not None
    assert after["spec"]["replicas"] == 3
    assert after["metadata"]["generation"] == before["metadata"]["generation"]


def test_replicas_above_the_bound_fail_at_argument_validation(worker: FakeKubeAPI) -> None:
    """A direct run with replicas=25 fails in the first task, before any API call changes anything."""
    run = run_playbook("scale_workers.yml", ["namespace=prod", "deployment=temporal-worker", "replicas=25"])
    assert run.rc != 0
    assert run.failed and run.failed[0][0].startswith("Validate parameter")
    assert "replicas" in run.failed[0][1]
    dep = worker.get("Deployment", "prod", "temporal-worker")
    assert dep is not None and dep["spec"]["replicas"] == 3


def test_missing_deployment_is_refused(kube: FakeKubeAPI) -> None:
    """A Deployment that does not exist fails with its name in the message."""
    run = run_playbook("scale_workers.yml", {"namespace": "prod", "deployment": "nope", "replicas": 2})
    assert run.rc != 0
    assert any("prod/nope not found" in msg for _, msg in run.failed), run.output
