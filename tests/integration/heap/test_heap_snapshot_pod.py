"""heap-snapshot runbook, pod kind: the fake Kubernetes API's pod exec, with PID 1 a real node process."""

from __future__ import annotations

import datetime
import json
import urllib.request

import pytest

from tests.fakes.pod_exec import FakeContainer, PodExec
from tests.support.kube import NODE_APP, deployment, ready_pods

pytestmark = pytest.mark.slow

CANARY = "canary-secret-3f9a1c7e"
FLAGS = "--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=/diag"


def _container(node, node_options: str = FLAGS) -> FakeContainer:
    return FakeContainer(pid=node.pid, local_diag=node.diag_dir, node_options=node_options,
                         extra_env={"DB_PASSWORD": CANARY})


def _wait_next_second(api) -> None:
    """Wait until the API's clock (creationTimestamp, 1 s resolution) has moved past the current second."""
    start = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    api.wait_until(lambda: datetime.datetime.now(datetime.UTC).replace(microsecond=0) > start, timeout=5)


@pytest.fixture
def prod_api(kube, start_node):
    """Deployment prod/api with one Ready pod whose app container's PID 1 is a real flagged node process."""
    api, env = kube
    api.apply(deployment("api", labels={"app": "api"}, replicas=1, containers=NODE_APP))
    (pod,) = ready_pods(api, "prod", "app=api", 1)
    node = start_node(name="pod-api")
    handler = PodExec()
    handler.containers[pod["metadata"]["name"]] = _container(node)
    api.set_exec_handler(handler)
    return api, env, pod["metadata"]["name"], node, handler


def test_pod_snapshot_is_uploaded_and_downloadable(prod_api, run_playbook, s3):
    """kill -USR2 1 in the pod yields a real heap snapshot in S3, served by the presigned URL."""
    _api, env, pod, _node, handler = prod_api
    run = run_playbook({"namespace": "prod", "deployment": "api", "s3_bucket": s3.bucket, "poll_interval": 0.2},
                       env={**s3.env, **env})
    assert run.rc == 0, run.failures or run.stderr
    result = run.stats["result"]
    assert result["key"].startswith(f"heap-snapshots/k8s/prod/{pod}/Heap.")
    with urllib.request.urlopen(result["url"]) as resp:  # noqa: S310 (a presigned http URL to moto)
        body = resp.read()
    assert len(body) == int(result["size"]) > 0
    assert "meta" in json.loads(body)["snapshot"]
    assert handler.containers[pod].signals == 1


def test_pod_snapshot_is_deleted_in_the_pod_after_the_upload(prod_api, run_playbook, s3):
    """The .heapsnapshot file is removed from the container's diagnostic dir once it is in S3."""
    api, env, _pod, node, _handler = prod_api
    run = run_playbook({"target": "k8s/prod/api", "s3_bucket": s3.bucket, "poll_interval": 0.2},
                       env={**s3.env, **env})
    assert run.rc == 0, run.failures or run.stderr
    assert node.snapshots() == []
    assert any(cmd[:2] == ["rm", "-f"] and cmd[2].startswith("/diag/Heap.") for *_, cmd in api.exec_log)
    assert node.alive()


def test_pod_environment_secrets_never_reach_the_output(prod_api, run_playbook, s3):
    """PID 1's environment is read for NODE_OPTIONS only: a secret in it appears nowhere in the run output."""
    api, env, pod, _node, _handler = prod_api
    run = run_playbook({"namespace": "prod", "pod": pod, "s3_bucket": s3.bucket, "poll_interval": 0.2},
                       env={**s3.env, **env})
    assert run.rc == 0, run.failures or run.stderr
    assert ["cat", "/proc/1/environ"] in [cmd for *_, cmd in api.exec_log]
    assert CANARY not in run.stdout and CANARY not in run.stderr


def test_newest_ready_pod_of_the_deployment_itself_is_chosen(kube, start_node, run_playbook, s3):
    """With a newer pod of another deployment matching the selector, only the target's own pod is used."""
    api, env = kube
    api.apply(deployment("api", labels={"app": "api"}, replicas=1, containers=NODE_APP))
    (own,) = ready_pods(api, "prod", "app=api", 1)
    _wait_next_second(api)
    api.apply(deployment("api-v2", labels={"app": "api", "track": "v2"}, replicas=1, containers=NODE_APP))
    ready_pods(api, "prod", "app=api,track=v2", 1)
    handler = PodExec()
    for p in api.list("Pod", "prod", "app=api"):
        handler.containers[p["metadata"]["name"]] = _container(start_node(name=p["metadata"]["name"]))
    api.set_exec_handler(handler)
    run = run_playbook({"target": "k8s/prod/api", "s3_bucket": s3.bucket}, env={**s3.env, **env}, check=True)
    assert run.rc == 0, run.failures or run.stderr
    assert f"in pod prod/{own['metadata']['name']} container app" in run.stats["plan"][0]
    assert {pod for _, pod, _, _ in api.exec_log} == {own["metadata"]["name"]}


def test_pod_check_mode_reports_the_plan_without_signalling(prod_api, run_playbook, s3):
    """--check names the pod, container and S3 location, and sends no signal."""
    api, env, pod, node, handler = prod_api
    run = run_playbook({"namespace": "prod", "deployment": "api", "s3_bucket": s3.bucket}, env={**s3.env, **env},
                       check=True)
    assert run.rc == 0, run.failures or run.stderr
    plan = run.stats["plan"]
    assert plan[0].startswith(f"send SIGUSR2 to PID 1 (node main.js) in pod prod/{pod} container app")
    assert any("/diag (NODE_OPTIONS)" in line for line in plan)
    assert any(f"s3://{s3.bucket}/heap-snapshots/k8s/prod/{pod}/" in line for line in plan)
    assert handler.containers[pod].signals == 0 and node.sigusr2_count() == 0
    assert not any(cmd[0] == "sh" for *_, cmd in api.exec_log)


def test_pod_without_the_flag_is_refused(prod_api, run_playbook, s3):
    """PID 1 without --heapsnapshot-signal=SIGUSR2 is refused before any kill is sent."""
    _api, env, pod, _node, handler = prod_api
    handler.containers[pod].node_options = "--max-old-space-size=2048"
    run = run_playbook({"namespace": "prod", "deployment": "api", "s3_bucket": s3.bucket}, env={**s3.env, **env})
    assert run.rc != 0
    assert any("not started with --heapsnapshot-signal=SIGUSR2" in m for m in run.failures), run.failures
    assert handler.containers[pod].signals == 0


def test_unknown_deployment_is_refused(kube, run_playbook, s3):
    """A deployment that does not exist is refused with its name."""
    _api, env = kube
    run = run_playbook({"namespace": "prod", "deployment": "nope", "s3_bucket": s3.bucket}, env={**s3.env, **env})
    assert run.rc != 0
    assert any("Deployment prod/nope not found" in m for m in run.failures), run.failures


def test_pod_with_less_free_disk_than_the_rss_is_refused(prod_api, run_playbook, s3):
    """A diagnostic dir (df in the pod) with less free space than PID 1's RSS is refused before the kill."""
    _api, env, pod, _node, handler = prod_api
    handler.containers[pod].df_avail_kb = 512
    run = run_playbook({"namespace": "prod", "deployment": "api", "s3_bucket": s3.bucket}, env={**s3.env, **env})
    assert run.rc != 0
    assert any("resident set size (RSS)" in m and "in the pod" in m for m in run.failures), run.failures
    assert handler.containers[pod].signals == 0


def test_k8s_auth_kubeconfig_is_honoured(prod_api, run_playbook, s3, tmp_path):
    """K8S_AUTH_KUBECONFIG (the kubernetes.core variable) is used even when KUBECONFIG points elsewhere."""
    _api, env, pod, _node, _handler = prod_api
    env = {"K8S_AUTH_KUBECONFIG": env["KUBECONFIG"], "KUBECONFIG": str(tmp_path / "missing-kubeconfig")}
    run = run_playbook({"target": "k8s/prod/api", "s3_bucket": s3.bucket}, env={**s3.env, **env}, check=True)
    assert run.rc == 0, run.failures or run.stderr
    assert f"pod prod/{pod} " in run.stats["plan"][0]
