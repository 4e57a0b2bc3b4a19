#!/usr/bin/python
"""Ansible module: roll a Deployment back to an earlier revision with `kubectl rollout undo` semantics."""

from __future__ import annotations

import copy
import time
from typing import Any

from ansible.module_utils import kube
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.runbook_module import OperatorError

DOCUMENTATION = r"""
---
module: rollout_undo
short_description: Roll a Deployment back to an earlier revision (kubectl rollout undo semantics)
description:
  - Finds the ReplicaSets B(owned) by the Deployment (an ownerReference with the Deployment's uid and
    C(controller=true)), picks the one with the highest C(deployment.kubernetes.io/revision) below the
    current revision (or exactly I(to_revision)), and replaces the Deployment's pod template with that
    ReplicaSet's template minus its C(pod-template-hash) label. Then waits for the rollout to complete
    the way C(kubectl rollout status) does.
  - Unlike C(kubernetes.core.k8s_rollback), it never selects ReplicaSets by label keys, so another
    Deployment whose labels share keys (or values) cannot lend its template.
  - Refuses when there is no previous revision, when I(to_revision) does not exist, and when the
    Deployment is paused.
  - In check mode, reports the change (revisions, images, changed template fields) without patching.
options:
  namespace:
    description: Namespace of the Deployment.
    type: str
    required: true
  name:
    description: Name of the Deployment.
    type: str
    required: true
  to_revision:
    description: Revision to roll back to; 0 means the previous revision.
    type: int
    default: 0
  wait:
    description: Wait until the rollout is complete.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait for the rollout.
    type: int
    default: 300
  wait_sleep:
    description: Seconds between status polls while waiting.
    type: float
    default: 1.0
  kubeconfig:
    description:
      - Path to a kubeconfig file. Defaults to C(K8S_AUTH_KUBECONFIG), then C(KUBECONFIG) (a path list is
        fine), then C(~/.kube/config), then the in-cluster service account.
    type: path
  context:
    description: Kubeconfig context to use. Defaults to C(K8S_AUTH_CONTEXT), then the current context.
    type: str
requirements:
  - kubernetes (the official Python client)
"""

EXAMPLES = r"""
- name: Roll prod/api back to its previous revision
  rollout_undo:
    namespace: prod
    name: api

- name: Roll prod/api back to revision 4 without waiting
  rollout_undo:
    namespace: prod
    name: api
    to_revision: 4
    wait: false
"""

RETURN = r"""
from_revision:
  description: Revision of the Deployment before the rollback.
  type: int
  returned: always
source_revision:
  description: Revision whose pod template was restored.
  type: int
  returned: always
to_revision:
  description: Revision of the Deployment after the rollback (the controller gives the restored template
    the next revision number); equals I(source_revision) in check mode and when nothing changed.
  type: int
  returned: always
from_images:
  description: C(container=image) pairs of the pod template before.
  type: list
  elements: str
  returned: always
to_images:
  description: C(container=image) pairs of the restored pod template.
  type: list
  elements: str
  returned: always
image_changes:
  description: One line per container whose image changes, e.g. C(app image api:3 -> api:2).
  type: list
  elements: str
  returned: always
replicaset:
  description: Name of the ReplicaSet whose template was restored.
  type: str
  returned: always
changed_fields:
  description: Sorted paths inside the pod template that differ between before and after.
  type: list
  elements: str
  returned: always
revisions:
  description: All revisions owned by the Deployment, ascending.
  type: list
  elements: int
  returned: always
ready_replicas:
  description: Ready replicas when the rollout finished (after waiting).
  type: int
  returned: when waited
"""

REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"


def revision(obj: dict[str, Any]) -> int:
    try:
        return int(((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def images(template: dict[str, Any]) -> list[str]:
    spec = template.get("spec") or {}
    return [f"{c['name']}={c.get('image', '')}" for c in (spec.get("initContainers") or []) + spec["containers"]]


def image_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """One line per container whose image differs, e.g. `app image api:3 -> api:2`."""
    old = dict(i.split("=", 1) for i in images(before))
    new = dict(i.split("=", 1) for i in images(after))
    lines = []
    for name in [*old, *(n for n in new if n not in old)]:
        if name not in new:
            lines.append(f"{name} removed (image {old[name]})")
        elif name not in old:
            lines.append(f"{name} added (image {new[name]})")
        elif old[name] != new[name]:
            lines.append(f"{name} image {old[name]} -> {new[name]}")
    return lines


def prune(value: Any) -> Any:
    """Drop nulls and empty maps/lists so serialisation noise does not count as a change."""
    if isinstance(value, dict):
        pruned = {k: prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [prune(v) for v in value]
    return value


def diff_paths(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths (dot/index notation) where two JSON values differ; lists of named items compare by name."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += diff_paths(a.get(key), b.get(key), f"{path}.{key}" if path else key)
        return out
    if isinstance(a, list) and isinstance(b, list) and all(isinstance(i, dict) and "name" in i for i in a + b):
        left, right = {i["name"]: i for i in a}, {i["name"]: i for i in b}
        out = []
        for key in sorted(set(left) | set(right)):
            out += diff_paths(left.get(key), right.get(key), f"{path}[{key}]")
        return out
    return [] if a == b else [path or "."]


def rollout_state(dep: dict[str, Any]) -> tuple[bool, str]:
    """(done, message) exactly like `kubectl rollout status` judges a Deployment."""
    meta, spec, st = dep["metadata"], dep["spec"], dep.get("status") or {}
    if meta.get("generation", 0) > st.get("observedGeneration", 0):
        return False, "waiting for the deployment spec update to be observed"
    for cond in st.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            raise OperatorError(f"deployment {meta['namespace']}/{meta['name']} exceeded its progress deadline")
    want, updated = spec.get("replicas", 1), st.get("updatedReplicas", 0)
    if updated < want:
        return False, f"{updated} of {want} updated replicas"
    if st.get("replicas", 0) > updated:
        return False, f"{st.get('replicas', 0) - updated} old replicas are pending termination"
    if st.get("availableReplicas", 0) < updated:
        return False, f"{st.get('availableReplicas', 0)} of {updated} updated replicas are available"
    return True, "rollout complete"


def roll_back(module: AnsibleModule) -> dict[str, Any]:
    p = module.params
    ns, name = p["namespace"], p["name"]
    ref = f"{ns}/{name}"
    k = kube.connect(module)
    apps = k.apps
    to_dict = k.api.sanitize_for_serialization
    dep = to_dict(kube.read_deployment(apps, ns, name))
    if dep["spec"].get("paused"):
        raise OperatorError(f"Deployment {ref} is paused; resume it before rolling back (kubectl refuses too)")
    current = revision(dep)
    uid = dep["metadata"]["uid"]
    owned = [to_dict(rs) for rs in kube.owned_replica_sets(apps, ns, uid)]
    by_rev = {revision(rs): rs for rs in owned if revision(rs) > 0}
    revisions = sorted(by_rev)
    if current == 0:
        raise OperatorError(f"Deployment {ref} has no revision yet (the controller has not rolled it out)")
    if p["to_revision"]:
        source = by_rev.get(p["to_revision"])
        if source is None:
            raise OperatorError(
                f"revision {p['to_revision']} not found in the history of Deployment {ref}; "
                f"its revisions: {', '.join(map(str, revisions)) or 'none'}"
            )
    else:
        older = [r for r in revisions if r < current]
        if not older:
            raise OperatorError(
                f"no previous revision of Deployment {ref} to roll back to (current revision "
                f"{current}; its revisions: {', '.join(map(str, revisions)) or 'none'})"
            )
        source = by_rev[older[-1]]
    source_rev = revision(source)
    template = copy.deepcopy(source["spec"]["template"])
    labels = (template.get("metadata") or {}).get("labels") or {}
    labels.pop(HASH_LABEL, None)
    before = dep["spec"]["template"]
    result: dict[str, Any] = {
        "from_revision": current,
        "source_revision": source_rev,
        "to_revision": source_rev,
        "from_images": images(before),
        "to_images": images(template),
        "image_changes": image_changes(before, template),
        "replicaset": source["metadata"]["name"],
        "changed_fields": diff_paths(prune(before), prune(template)),
        "revisions": revisions,
        "changed": False,
    }
    if not result["changed_fields"]:
        result["to_revision"] = current
        result["msg"] = f"skipped rollback: the current template of {ref} already matches revision {source_rev}"
        return result
    result["changed"] = True
    if module.check_mode:
        return result
    patch = [
        # Fail (422) instead of overwriting a change made since we read the Deployment.
        {"op": "test", "path": "/metadata/resourceVersion", "value": dep["metadata"]["resourceVersion"]},
        {"op": "replace", "path": "/spec/template", "value": template},
    ]
    try:
        apps.patch_namespaced_deployment(name, ns, patch)
    except kube.ApiException as exc:
        if exc.status in (409, 422):
            raise OperatorError(
                f"Deployment {ref} changed while rolling back; nothing was patched, run the rollback again"
            ) from exc
        raise
    if p["wait"]:
        deadline = time.monotonic() + p["wait_timeout"]
        while True:
            dep = to_dict(apps.read_namespaced_deployment(name, ns))
            done, message = rollout_state(dep)
            if done:
                break
            if time.monotonic() > deadline:
                raise OperatorError(
                    f"Deployment {ref} was rolled back to the template of revision {source_rev} "
                    f"but the rollout did not finish within {p['wait_timeout']}s: {message}"
                )
            time.sleep(p["wait_sleep"])
        result["ready_replicas"] = (dep.get("status") or {}).get("readyReplicas", 0)
    else:
        dep = to_dict(apps.read_namespaced_deployment(name, ns))
    result["to_revision"] = revision(dep) if revision(dep) != current else source_rev
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "namespace": {"type": "str", "required": True},
            "name": {"type": "str", "required": True},
            # 0: the previous revision (the playbook passes 0 when the runbook's to_revision is unset).
            "to_revision": {"type": "int", "default": 0},
            "wait": {"type": "bool", "default": True},
            "wait_timeout": {"type": "int", "default": 300},
            "wait_sleep": {"type": "float", "default": 1.0},
            **kube.CONNECTION_OPTIONS,
        },
        supports_check_mode=True,
    )
    kube.run_module(module, lambda: roll_back(module))


if __name__ == "__main__":
    main()
