"""Kubernetes objects and waits for tests against the fake API server (tests/fakes/kube_api.py), and the
`kube` fixture (a pytest plugin, registered in tests/conftest.py; some feature dirs override it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # the fake (aiohttp) is imported when a test asks for it, not by every run
    from tests.fakes.kube_api import FakeKubeAPI

# A Node.js app container that snapshots its heap on SIGUSR2 into /diag, beside a sidecar (heap-snapshot tests).
NODE_APP: list[dict[str, Any]] = [
    {"name": "app", "image": "registry.example/api:1.0",
     "env": [{"name": "NODE_OPTIONS", "value": "--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=/diag"}]},
    {"name": "sidecar", "image": "registry.example/proxy:1.0"},
]


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKubeAPI]:
    """A started fake API server; KUBECONFIG/K8S_AUTH_KUBECONFIG point at it for every subprocess."""
    from tests.fakes.kube_api import FakeKubeAPI

    with FakeKubeAPI() as fake:
        config = fake.kubeconfig(tmp_path / "kubeconfig")
        monkeypatch.setenv("KUBECONFIG", str(config))
        monkeypatch.setenv("K8S_AUTH_KUBECONFIG", str(config))
        monkeypatch.setenv("KUBECACHEDIR", str(tmp_path / "kube-cache"))
        yield fake


def deployment(
    name: str, image: str = "example/app:1", *, namespace: str = "prod", replicas: int = 2,
    labels: dict[str, str] | None = None, containers: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A minimal apps/v1 Deployment manifest: `containers`, or one container named `app` running `image`."""
    labels = labels or {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": containers or [{"name": "app", "image": image}]},
            },
        },
    }


def rolled_out(kube: FakeKubeAPI, namespace: str, name: str) -> bool:
    """True when the Deployment's status shows a complete rollout of its current spec."""
    dep = kube.get("Deployment", namespace, name)
    if dep is None:
        return False
    st, want = dep.get("status", {}), dep["spec"]["replicas"]
    return st.get("observedGeneration") == dep["metadata"]["generation"] and st.get(
        "updatedReplicas"
    ) == want == st.get("replicas") == st.get("availableReplicas")


def set_image(kube: FakeKubeAPI, namespace: str, name: str, image: str) -> None:
    """Change the Deployment's image (a new revision) and wait for the fake controller to roll it out."""
    dep = kube.get("Deployment", namespace, name)
    assert dep is not None
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = image
    kube.apply(dep)
    kube.wait_until(
        lambda: (
            rolled_out(kube, namespace, name)
            and kube.get("Deployment", namespace, name)["metadata"]["annotations"].get(
                "deployment.kubernetes.io/revision"
            )
            == str(
                max(
                    int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"])
                    for rs in kube.list("ReplicaSet", namespace)
                )
            )
        )
    )


def ready_pods(api: FakeKubeAPI, namespace: str, selector: str, count: int) -> list[dict[str, Any]]:
    """Wait until `count` pods matching `selector` are Running; return them."""
    def running() -> list[dict[str, Any]] | None:
        pods = [p for p in api.list("Pod", namespace, selector) if p["status"].get("phase") == "Running"]
        return pods if len(pods) == count else None

    return api.wait_until(running, timeout=20)
