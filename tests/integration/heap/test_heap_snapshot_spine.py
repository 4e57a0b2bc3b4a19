"""heap-snapshot through the real CLI spine: request (check-mode plan), approve, worker, status."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from tests.fakes.pod_exec import FakeContainer, PodExec
from tests.support.kube import NODE_APP, deployment, ready_pods
from tests.support.paths import ROOT
from tests.support.spine import cli

pytestmark = pytest.mark.slow


@pytest.fixture
def env(spine_env: dict[str, str], s3, tmp_path: Path) -> dict[str, str]:
    """The spine over a catalog holding only the real heap-snapshot runbook, with moto's S3 in the env."""
    catalog = tmp_path / "runbooks"
    catalog.mkdir()
    shutil.copy(ROOT / "runbooks" / "heap-snapshot.md", catalog / "heap-snapshot.md")
    # A private copy of playbooks/: the plan hash covers all of playbooks/library, which other work in
    # the same tree may change between the request and the worker (the spine then rightly refuses).
    playbooks = tmp_path / "playbooks"
    shutil.copytree(ROOT / "playbooks", playbooks, ignore=shutil.ignore_patterns("__pycache__"))
    return {**spine_env, **s3.env, "RUNBOOK_BOT_RUNBOOKS": str(catalog), "RUNBOOK_BOT_PLAYBOOKS": str(playbooks)}


def test_host_snapshot_through_the_cli(env: dict[str, str], start_node, s3) -> None:
    """An approved heap-snapshot run signals the process once and stores the key and a working URL."""
    node = start_node()
    req = cli(env, "request", "heap-snapshot", "target=host/localhost", f"pid={node.pid}",
              f"s3_bucket={s3.bucket}", "--reason", "INC-9 memory leak")
    assert req.returncode == 0, req.stderr
    run_id = req.stdout.strip()
    assert node.sigusr2_count() == 0  # the request's check-mode plan signals nothing
    assert cli(env, "approve", run_id, user="bob").returncode == 0
    work = cli(env, "worker", "--once", timeout=240)
    assert f"[run {run_id}] succeeded" in work.stdout, work.stdout + work.stderr
    status = json.loads(cli(env, "status", run_id, "--json").stdout)
    assert status["plan"][0].startswith(f"send SIGUSR2 to pid {node.pid} (node server.js) on localhost"), status
    result = status["result"]
    assert result["key"].startswith("heap-snapshots/host/localhost/Heap.")
    with urllib.request.urlopen(result["url"]) as resp:  # noqa: S310 (a presigned http URL to moto)
        assert "meta" in json.loads(resp.read())["snapshot"]
    assert node.sigusr2_count() == 1 and node.snapshots() == []


def test_pod_snapshot_through_the_cli(env: dict[str, str], kube, start_node, s3) -> None:
    """An approved run on target k8s/prod/api snapshots its pod through exec and stores a working URL."""
    api, kube_env = kube
    api.apply(deployment("api", labels={"app": "api"}, replicas=1, containers=NODE_APP))
    (pod,) = ready_pods(api, "prod", "app=api", 1)
    name = pod["metadata"]["name"]
    node = start_node(name="pod")
    handler = PodExec()
    handler.containers[name] = FakeContainer(pid=node.pid, local_diag=node.diag_dir,
                                             node_options="--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=/diag")
    api.set_exec_handler(handler)
    env = {**env, **kube_env}
    req = cli(env, "request", "heap-snapshot", "target=k8s/prod/api", f"s3_bucket={s3.bucket}",
              "--reason", "INC-10 api OOMKilled")
    assert req.returncode == 0, req.stderr
    run_id = req.stdout.strip()
    assert cli(env, "approve", run_id, user="carol").returncode == 0
    work = cli(env, "worker", "--once", timeout=240)
    assert f"[run {run_id}] succeeded" in work.stdout, work.stdout + work.stderr
    status = json.loads(cli(env, "status", run_id, "--json").stdout)
    assert status["result"]["key"].startswith(f"heap-snapshots/k8s/prod/{name}/Heap.")
    with urllib.request.urlopen(status["result"]["url"]) as resp:  # noqa: S310 (a presigned http URL to moto)
        assert "meta" in json.loads(resp.read())["snapshot"]
    assert handler.containers[name].signals == 1 and node.snapshots() == []
