"""Kubernetes access shared by the project modules (rollout_undo, heap_snapshot_pod).

Imported as `ansible.module_utils.kube`. Needs the `kubernetes` Python client in the module's
interpreter; `HAS_KUBERNETES` says whether it is there (modules report `missing_required_lib`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.runbook_module import OperatorError, run

__all__ = [
    "CONNECTION_OPTIONS", "HAS_KUBERNETES", "ApiException", "Kube", "api_client", "api_error", "connect",
    "owned_replica_sets", "read_deployment", "run_module",
]

# Argument spec entries every Kubernetes module takes (passed on to api_client).
CONNECTION_OPTIONS: dict[str, dict[str, Any]] = {"kubeconfig": {"type": "path"}, "context": {"type": "str"}}

try:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    HAS_KUBERNETES = True
except ImportError:  # reported by the module's main()
    HAS_KUBERNETES = False

    class ApiException(Exception):  # type: ignore[no-redef]
        """Stands in for the client's exception class when the client is missing (never raised)."""

        status = 0
        reason = ""


def api_client(kubeconfig: str | None, context: str | None) -> Any:
    """An ApiClient from the kubeconfig option / K8S_AUTH_KUBECONFIG / KUBECONFIG / ~/.kube/config,
    else the in-cluster configuration; none of them is an OperatorError that says what to set."""
    path = kubeconfig or os.environ.get("K8S_AUTH_KUBECONFIG") or None
    context = context or os.environ.get("K8S_AUTH_CONTEXT") or None
    default_exists = os.environ.get("KUBECONFIG") or os.path.exists(os.path.expanduser("~/.kube/config"))
    try:
        if path or default_exists:
            # kubernetes' config loaders carry no annotations
            return config.new_client_from_config(config_file=path, context=context)  # type: ignore[no-untyped-call]
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as exc:  # says "Service host/port is not set" outside a cluster
        raise OperatorError(
            "no Kubernetes cluster to talk to: set KUBECONFIG (or K8S_AUTH_KUBECONFIG) in the environment of the "
            "worker, or the inventory's kube_context with a kubeconfig at ~/.kube/config, or run the worker in a "
            f"cluster (in-cluster configuration: {exc})"
        ) from None
    return client.ApiClient()


@dataclass(frozen=True)
class Kube:
    """The API client and the two API groups the modules use."""

    api: Any  # kubernetes.client.ApiClient (sanitize_for_serialization turns objects into JSON dicts)
    core: Any  # CoreV1Api
    apps: Any  # AppsV1Api


def connect(module: AnsibleModule) -> Kube:
    """Kube for the module's kubeconfig/context options (CONNECTION_OPTIONS)."""
    api = api_client(module.params["kubeconfig"], module.params["context"])
    return Kube(api, client.CoreV1Api(api), client.AppsV1Api(api))


def read_deployment(apps: Any, namespace: str, name: str) -> Any:
    """The Deployment object; a 404 is an OperatorError `Deployment ns/name not found`."""
    try:
        return apps.read_namespaced_deployment(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise OperatorError(f"Deployment {namespace}/{name} not found") from None
        raise


def owned_replica_sets(apps: Any, namespace: str, uid: str, label_selector: str | None = None) -> list[Any]:
    """The ReplicaSets that the Deployment with this uid controls (owner reference with its uid and
    controller=true, as kubectl decides): ReplicaSets of other Deployments with similar labels never count."""
    kwargs = {"label_selector": label_selector} if label_selector else {}
    return [
        rs for rs in apps.list_namespaced_replica_set(namespace, **kwargs).items
        if any(o.uid == uid and o.controller for o in (rs.metadata.owner_references or []))
    ]


def api_error(exc: Exception) -> OperatorError | None:
    """An API error as the operator sees it (for runbook_module.run's `translate`)."""
    if isinstance(exc, ApiException):
        return OperatorError(f"Kubernetes API error {exc.status} {exc.reason}: {exc.body}")
    return None


def run_module(module: AnsibleModule, body: Callable[[], Mapping[str, Any]]) -> NoReturn:
    """runbook_module.run for a Kubernetes module: refuses without the client, reports API errors."""
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"))
    run(module, body, api_error)
