"""Fixtures for the Kubernetes runbook tests: the fake API server and a real ansible-playbook runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.kube_api import FakeKubeAPI

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKubeAPI]:
    """A started fake API server; KUBECONFIG/K8S_AUTH_KUBECONFIG point at it for every subprocess."""
    with FakeKubeAPI() as fake:
        config = fake.kubeconfig(tmp_path / "kubeconfig")
        monkeypatch.setenv("KUBECONFIG", str(config))
        monkeypatch.setenv("K8S_AUTH_KUBECONFIG", str(config))
        monkeypatch.setenv("KUBECACHEDIR", str(tmp_path / "kube-cache"))
        yield fake


def deployment(
    name: str, image: str, *, namespace: str = "prod", replicas: int = 2, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """A minimal apps/v1 Deployment manifest with one container named `app`."""
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
                "spec": {"containers": [{"name": "app", "image": image}]},
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


@dataclass
class PlaybookRun:
    rc: int
    stats: dict[str, Any]
    failed: list[tuple[str, str]] = field(default_factory=list)  # (task name, message)
    output: str = ""


def run_playbook(playbook: str, extra: dict[str, Any] | list[str], *, check: bool = False) -> PlaybookRun:
    """Run playbooks/<playbook> with ansible-playbook for real; extra is a dict (JSON) or raw -e strings."""
    args = [str(BIN / "ansible-playbook"), "-i", "inventory/local", f"playbooks/{playbook}"]
    if isinstance(extra, dict):
        args += ["-e", json.dumps(extra)]
    else:
        for item in extra:
            args += ["-e", item]
    if check:
        args.append("--check")
    env = {
        **os.environ,
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_SHOW_CUSTOM_STATS": "true",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    try:
        doc = json.loads(proc.stdout[proc.stdout.index("{") :])
    except ValueError:
        return PlaybookRun(proc.returncode, {}, [("(no json)", proc.stderr)], proc.stdout + proc.stderr)
    failed = [
        (task["task"]["name"], str(host.get("msg", "")))
        for play in doc.get("plays", [])
        for task in play.get("tasks", [])
        for host in task.get("hosts", {}).values()
        if host.get("failed") and not host.get("ignore_errors")
    ]
    return PlaybookRun(proc.returncode, doc.get("global_custom_stats", {}), failed, proc.stdout + proc.stderr)
