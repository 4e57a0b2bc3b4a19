"""rollout_undo.yml run for real with ansible-playbook against the fake Kubernetes API."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.kube_api import FakeKubeAPI
from tests.support.kube import deployment, rolled_out, set_image
from tests.support.playbooks import run_playbook

pytestmark = pytest.mark.slow

REVISION = "deployment.kubernetes.io/revision"


def image(kube: FakeKubeAPI, name: str) -> str:
    dep = kube.get("Deployment", "prod", name)
    assert dep is not None
    return str(dep["spec"]["template"]["spec"]["containers"][0]["image"])


def revision(kube: FakeKubeAPI, name: str) -> str:
    dep = kube.get("Deployment", "prod", name)
    assert dep is not None
    return str(dep["metadata"]["annotations"][REVISION])


@pytest.fixture
def api(kube: FakeKubeAPI) -> FakeKubeAPI:
    """prod/api with three revisions: api:1, api:2, api:3 (current)."""
    kube.apply(deployment("api", "api:1", replicas=2))
    kube.wait_until(lambda: rolled_out(kube, "prod", "api"))
    set_image(kube, "prod", "api", "api:2")
    set_image(kube, "prod", "api", "api:3")
    assert revision(kube, "api") == "3"
    return kube


def undo(**extra: Any) -> Any:
    return run_playbook("rollout_undo.yml", {"namespace": "prod", "deployment": "api", **extra})


def test_undo_rolls_back_to_the_previous_revision(api: FakeKubeAPI) -> None:
    """Without to_revision the template of revision 2 comes back as revision 4 and the rollout completes."""
    run = undo()
    assert run.rc == 0, run.output
    assert image(api, "api") == "api:2"
    assert revision(api, "api") == "4"
    assert rolled_out(api, "prod", "api")
    assert run.stats["summary"] == [
        "prod/api rolled back: revision 3 -> 4 (template of revision 2), rollout complete, 2 ready",
        "app image api:3 -> api:2",
    ]
    assert run.stats["result"]["source_revision"] == 2


def test_undo_to_a_given_revision(api: FakeKubeAPI) -> None:
    """to_revision=1 restores the first template."""
    run = undo(to_revision=1)
    assert run.rc == 0, run.output
    assert image(api, "api") == "api:1"
    assert run.stats["result"]["from_images"] == ["app=api:3"]
    assert run.stats["result"]["to_images"] == ["app=api:1"]


def test_check_mode_shows_the_template_change_only(api: FakeKubeAPI) -> None:
    """Check mode reports revisions and images from -> to and patches nothing."""
    before = api.get("Deployment", "prod", "api")
    run = run_playbook("rollout_undo.yml", {"namespace": "prod", "deployment": "api"}, check=True)
    assert run.rc == 0, run.output
    assert run.stats["plan"] == [
        "deployment prod/api roll back from revision 3 to the template of revision 2",
        "app image api:3 -> api:2",
    ]
    after = api.get("Deployment", "prod", "api")
    assert after is not None and before is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_no_previous_revision_is_refused(kube: FakeKubeAPI) -> None:
    """A Deployment with a single revision has nothing to roll back to, and says so."""
    kube.apply(deployment("api", "api:1"))
    kube.wait_until(lambda: rolled_out(kube, "prod", "api"))
    run = undo()
    assert run.rc != 0
    assert any("no previous revision of Deployment prod/api" in msg for _, msg in run.failed), run.output
    assert image(kube, "api") == "api:1"


def test_unknown_to_revision_is_refused(api: FakeKubeAPI) -> None:
    """to_revision=9 does not exist: refused with the list of revisions, nothing patched."""
    run = undo(to_revision=9)
    assert run.rc != 0
    assert any("revision 9 not found" in msg and "1, 2, 3" in msg for _, msg in run.failed), run.output
    assert image(api, "api") == "api:3"


def test_other_template_changes_are_listed_in_the_plan(api: FakeKubeAPI) -> None:
    """A revision that also changed env shows that field in the check-mode plan."""
    dep = api.get("Deployment", "prod", "api")
    assert dep is not None
    dep["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "LOG_LEVEL", "value": "debug"}]
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = "api:4"
    api.apply(dep)
    api.wait_until(lambda: revision(api, "api") == "4" and rolled_out(api, "prod", "api"))
    run = run_playbook("rollout_undo.yml", {"namespace": "prod", "deployment": "api"}, check=True)
    assert run.rc == 0, run.output
    assert run.stats["plan"][1:] == [
        "app image api:4 -> api:3",
        "other pod template changes: spec.containers[app].env",
    ]


def test_only_the_target_deployments_own_history_is_used(kube: FakeKubeAPI) -> None:
    """Two Deployments share label keys (app, track): undo of one never applies the other's template."""
    stable = {"app": "web", "track": "stable"}
    canary = {"app": "web", "track": "canary"}
    kube.apply(deployment("web", "web:1", labels=stable))
    kube.apply(deployment("web-canary", "canary:1", labels=canary))
    kube.wait_until(lambda: rolled_out(kube, "prod", "web") and rolled_out(kube, "prod", "web-canary"))
    set_image(kube, "prod", "web-canary", "canary:2")
    set_image(kube, "prod", "web", "web:2")
    set_image(kube, "prod", "web-canary", "canary:3")  # the newest ReplicaSet in the namespace
    run = run_playbook("rollout_undo.yml", {"namespace": "prod", "deployment": "web"})
    assert run.rc == 0, run.output
    assert image(kube, "web") == "web:1"
    assert image(kube, "web-canary") == "canary:3"
    web_pods = kube.list("Pod", "prod", "track=stable")
    assert web_pods and {p["spec"]["containers"][0]["image"] for p in web_pods} == {"web:1"}
    web = kube.get("Deployment", "prod", "web")
    assert web is not None
    assert web["spec"]["template"]["metadata"]["labels"] == stable
