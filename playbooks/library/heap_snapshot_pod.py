#!/usr/bin/python
"""Ansible module: make the Node.js process (PID 1) of a pod's container write a heap snapshot."""

from __future__ import annotations

import json
import os
import posixpath
import time
from typing import Any, BinaryIO

from ansible.module_utils import heap_snapshot_node as node
from ansible.module_utils import kube
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.runbook_module import OperatorError

DOCUMENTATION = r"""
---
module: heap_snapshot_pod
short_description: Heap snapshot of the Node.js process in a Kubernetes pod, copied to the controller
description:
  - Picks the pod (O(pod), or the newest Ready pod of O(deployment)) and container (O(container), else
    the C(kubectl.kubernetes.io/default-container) annotation, else the first container).
  - Everything in the container runs through pod exec (argv lists, no shell except C(sh -c "kill -USR2 1")
    because slim images have no kill binary), reading PID 1's command line, C(NODE_OPTIONS) (the rest of
    the environment is never returned), working directory and resident set size.
  - Refuses unless PID 1 was started with C(--heapsnapshot-signal=SIGUSR2); without it SIGUSR2 would not
    write a snapshot and its default action kills the process (and the container with it).
  - O(state=captured) sends SIGUSR2 to PID 1, polls the new C(.heapsnapshot) file's size until it is
    stable and the file ends like a complete JSON document, and copies it (C(cat) over exec, binary-safe)
    to O(dest) on the controller, checking the size. O(state=absent) deletes O(path) in the container.
  - Uses the kubernetes Python client with O(kubeconfig) / C(K8S_AUTH_KUBECONFIG), else C(KUBECONFIG) or
    C(~/.kube/config), else the in-cluster service account.
options:
  namespace:
    description: Namespace of the pod.
    type: str
    required: true
  pod:
    description: Pod name. With O(deployment) it must belong to that deployment.
    type: str
  deployment:
    description: Deployment whose newest Ready pod is used when O(pod) is not given.
    type: str
  container:
    description: Container name.
    type: str
  state:
    description: V(inspected) reads only; V(captured) signals and copies; V(absent) deletes O(path).
    type: str
    choices: [inspected, captured, absent]
    default: inspected
  pod_uid:
    description: With V(captured), refuse unless the pod still has this uid.
    type: str
  dest:
    description: Controller directory for the copy (V(captured)).
    type: path
  path:
    description: File to delete in the container (V(absent)).
    type: str
  timeout:
    description: Seconds to wait for a complete snapshot (as in heap_snapshot_process, default 900).
  poll_interval:
    description: Seconds between size polls (as in heap_snapshot_process).
  stable_polls:
    description: As in heap_snapshot_process (heap_snapshot_node.POLL_OPTIONS is the spec of both).
  kubeconfig:
    description: Path of a kubeconfig file (default C(K8S_AUTH_KUBECONFIG), then C(KUBECONFIG)).
    type: path
  context:
    description: Kubeconfig context (default C(K8S_AUTH_CONTEXT), then the current context).
    type: str
author: runbook-bot
"""

EXAMPLES = r"""
- name: Snapshot the newest ready api pod
  heap_snapshot_pod:
    namespace: prod
    deployment: api
    state: captured
    dest: /tmp/snap
  register: snap
"""

RETURN = r"""
pod:
  description: Pod name.
  returned: always
  type: str
pod_uid:
  description: Pod uid.
  returned: always
  type: str
container:
  description: Container name.
  returned: always
  type: str
command:
  description: Executable and script of PID 1 (no other arguments).
  returned: not absent
  type: str
diagnostic_dir:
  description: Directory the snapshot is written to in the container.
  returned: not absent
  type: str
diagnostic_dir_source:
  description: Where that came from.
  returned: not absent
  type: str
signal_source:
  description: Where --heapsnapshot-signal was found.
  returned: not absent
  type: str
rss_bytes:
  description: Resident set size of PID 1.
  returned: not absent
  type: int
pod_free_bytes:
  description: Free bytes in the diagnostic dir (from df), or -1 when unknown.
  returned: not absent
  type: int
path:
  description: Snapshot path in the container.
  returned: captured
  type: str
name:
  description: Snapshot file name.
  returned: captured
  type: str
local_path:
  description: The copy on the controller.
  returned: captured
  type: str
size:
  description: Snapshot size in bytes.
  returned: captured
  type: int
seconds:
  description: Seconds from the signal until the file was complete.
  returned: captured
  type: float
"""


if kube.HAS_KUBERNETES:
    from kubernetes.stream import stream as k8s_stream
    from kubernetes.stream import ws_client


def _selector(sel: Any) -> str:
    parts = [f"{k}={v}" for k, v in sorted((sel.match_labels or {}).items())]
    for e in sel.match_expressions or []:
        vals = ",".join(e.values or [])
        parts.append({"In": f"{e.key} in ({vals})", "NotIn": f"{e.key} notin ({vals})",
                      "Exists": e.key, "DoesNotExist": f"!{e.key}"}[e.operator])
    return ",".join(parts)


def _ready(p: Any) -> bool:
    return bool(
        p.metadata.deletion_timestamp is None
        and (p.status.phase if p.status else None) == "Running"
        and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
    )


def _owned_pods(core: Any, apps: Any, ns: str, dep_name: str) -> list[Any]:
    """Pods selected by the deployment's selector, minus those controlled by another owner's ReplicaSet."""
    dep = kube.read_deployment(apps, ns, dep_name)
    selector = _selector(dep.spec.selector)
    if not selector:
        raise OperatorError(f"deployment {ns}/{dep_name} has an empty selector")
    mine = {rs.metadata.uid for rs in kube.owned_replica_sets(apps, ns, dep.metadata.uid, label_selector=selector)}
    out = []
    for p in core.list_namespaced_pod(ns, label_selector=selector).items:
        ctrl = [o for o in (p.metadata.owner_references or []) if o.controller]
        if ctrl and ctrl[0].kind == "ReplicaSet" and ctrl[0].uid not in mine:
            continue
        out.append(p)
    return out


def pick_pod(module: AnsibleModule, core: Any, apps: Any) -> Any:
    ns, name, dep = module.params["namespace"], module.params["pod"], module.params["deployment"]
    if name:
        try:
            pod = core.read_namespaced_pod(name, ns)
        except kube.ApiException as e:
            if e.status == 404:
                raise OperatorError(f"pod {ns}/{name} not found") from None
            raise
        if dep and pod.metadata.uid not in {p.metadata.uid for p in _owned_pods(core, apps, ns, dep)}:
            raise OperatorError(f"pod {ns}/{name} does not belong to deployment {ns}/{dep}")
        if (pod.status.phase if pod.status else None) != "Running" or pod.metadata.deletion_timestamp:
            raise OperatorError(f"pod {ns}/{name} is not running (phase {pod.status.phase if pod.status else '?'})")
        return pod
    if not dep:
        raise OperatorError("give pod or deployment")
    pods = _owned_pods(core, apps, ns, dep)
    ready = [p for p in pods if _ready(p)]
    if not ready:
        raise OperatorError(f"deployment {ns}/{dep} has no Ready pod ({len(pods)} pods in total)")
    return max(ready, key=lambda p: (p.metadata.creation_timestamp, p.metadata.name))


def pick_container(module: AnsibleModule, pod: Any) -> str:
    names: list[str] = [c.name for c in pod.spec.containers]
    want = module.params["container"]
    if want:
        if want not in names:
            raise OperatorError(f"pod {pod.metadata.name} has no container {want!r} (containers: {', '.join(names)})")
        return str(want)
    default = (pod.metadata.annotations or {}).get("kubectl.kubernetes.io/default-container")
    return str(default) if default in names else names[0]


class Exec:
    """Run argv in one container through the exec websocket; output is bytes, never decoded."""

    def __init__(self, core: Any, ns: str, pod: str, container: str) -> None:
        self.core, self.ns, self.pod, self.container = core, ns, pod, container

    def run(self, argv: list[str], out: BinaryIO | None = None, timeout: float = 120) -> tuple[int, bytes, bytes]:
        resp = k8s_stream(
            self.core.connect_get_namespaced_pod_exec, self.pod, self.ns, container=self.container,
            command=argv, stdin=False, stdout=True, stderr=True, tty=False,
            _preload_content=False, binary=True,
        )
        # kubernetes.stream.stream() does not pass capture_all through, so WSClient keeps a second copy
        # of all stdout in memory (self._all): drop it, stdout is streamed to `out` below.
        if hasattr(resp, "_all"):
            resp._all = ws_client._IgnoredIO()
        buf, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout

        def drain() -> None:
            """Move what arrived on stdout (to `out`, or the buffer) and stderr."""
            chunk = resp.read_channel(ws_client.STDOUT_CHANNEL)
            if chunk:
                if out is not None:
                    out.write(chunk)
                else:
                    buf.extend(chunk)
            err.extend(resp.read_channel(ws_client.STDERR_CHANNEL))

        try:
            while resp.is_open():
                if time.monotonic() > deadline:
                    raise OperatorError(f"exec {argv[0]} in {self.ns}/{self.pod} timed out after {timeout} s")
                resp.update(timeout=1)
                drain()
            drain()
            status = resp.read_channel(ws_client.ERROR_CHANNEL)
        finally:
            resp.close()
        return self._rc(status), bytes(buf), bytes(err)

    @staticmethod
    def _rc(status: bytes) -> int:
        if not status:
            return 0
        try:
            st = json.loads(status)
        except ValueError:
            return 126
        if st.get("status") == "Success":
            return 0
        for cause in (st.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode":
                try:
                    return int(cause.get("message"))
                except (TypeError, ValueError):
                    break
        return 126  # the command could not be run at all (e.g. executable not found)

    def check(self, argv: list[str], what: str) -> bytes:
        rc, out, err = self.run(argv)
        if rc != 0:
            raise OperatorError(f"{what} failed in {self.ns}/{self.pod} ({' '.join(argv)}: rc {rc}: "
                                f"{err.decode('utf-8', 'replace').strip()[:300]})")
        return out


def inspect(ex: Exec, where: str) -> dict[str, Any]:
    raw = ex.check(["cat", "/proc/1/cmdline"], "reading PID 1's command line")
    argv = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
    rc, environ, _ = ex.run(["cat", "/proc/1/environ"])
    node_options = node.parse_environ(environ) if rc == 0 else None
    del environ  # may hold secrets: only NODE_OPTIONS is kept
    settings = node.snapshot_settings(argv, node_options)
    reason = node.refusal(settings, f"PID 1 ({' '.join(posixpath.basename(a) for a in argv[:1])}) in {where}")
    if reason:
        raise OperatorError(reason)
    cwd = ex.check(["readlink", "/proc/1/cwd"], "reading PID 1's working directory").decode().strip() or "/"
    ddir, source = settings["diagnostic_dir"], settings["diagnostic_dir_source"]
    if ddir:
        ddir = posixpath.normpath(posixpath.join(cwd, ddir))
        source = f"--diagnostic-dir on the {source}" if source == "command line" else source
    else:
        ddir, source = cwd, "cwd"
    rss = node.parse_rss(ex.check(["cat", "/proc/1/status"], "reading PID 1's status").decode("utf-8", "replace"))
    rc, df, _ = ex.run(["df", "-Pk", ddir])
    free = -1
    if rc == 0:
        lines = df.decode("utf-8", "replace").strip().splitlines()
        try:
            free = int(lines[-1].split()[3]) * 1024
        except (IndexError, ValueError):
            free = -1
    script = next((a for a in argv[1:] if not a.startswith("-")), "")
    return {
        "command": f"{posixpath.basename(argv[0]) if argv else '?'} {posixpath.basename(script)}".strip(),
        "diagnostic_dir": ddir,
        "diagnostic_dir_source": source,
        "signal_source": settings["signal_source"],
        "rss_bytes": rss or 0,
        "pod_free_bytes": free,
    }


def _snapshots(ex: Exec, ddir: str) -> set[str]:
    out = ex.check(["ls", "-1a", ddir], f"listing {ddir}")
    return {n for n in out.decode("utf-8", "replace").splitlines() if node.HEAP_SNAPSHOT_RE.match(n)}


class PodDirectory:
    """The container's diagnostic directory, as node.wait_for_snapshot polls it (through pod exec)."""

    no_file_hint = "can the process write there (read-only root filesystem? mount an emptyDir)?"

    def __init__(self, ex: Exec, directory: str) -> None:
        self.ex, self.directory = ex, directory
        self.before = _snapshots(ex, directory)

    def new_file(self) -> str | None:
        new = sorted(_snapshots(self.ex, self.directory) - self.before)
        return posixpath.join(self.directory, new[-1]) if new else None

    def size(self, path: str) -> int:
        return int(self.ex.check(["stat", "-c", "%s", path], f"measuring {path}").strip())

    def tail(self, path: str) -> bytes:
        return self.ex.check(["tail", "-c", "64", path], f"reading {path}")

    def check_alive(self, path: str | None) -> None:
        """PID 1 of a container: when it exits the container restarts and exec fails on its own."""


def capture(module: AnsibleModule, ex: Exec, info: dict[str, Any]) -> dict[str, Any]:
    source = PodDirectory(ex, info["diagnostic_dir"])
    started = time.monotonic()
    # sh's builtin kill: node:*-slim images have no kill binary.
    ex.check(["sh", "-c", "kill -USR2 1"], "sending SIGUSR2 to PID 1")
    snap = node.wait_for_snapshot(source, started, module.params["timeout"], module.params["poll_interval"],
                             module.params["stable_polls"])
    local = os.path.join(module.params["dest"], posixpath.basename(snap.path))
    with open(local, "wb") as f:
        rc, _, err = ex.run(["cat", snap.path], out=f, timeout=module.params["timeout"])
    copied = os.path.getsize(local)
    if rc != 0 or copied != snap.size:
        raise OperatorError(f"copying {snap.path} out of the pod failed (rc {rc}, {copied} of {snap.size} bytes): "
                            f"{err.decode('utf-8', 'replace').strip()[:300]}; the file is still in the pod")
    return {"path": snap.path, "name": posixpath.basename(snap.path), "local_path": local, "size": snap.size,
            "seconds": snap.seconds}


def snapshot(module: AnsibleModule) -> dict[str, Any]:
    k = kube.connect(module)
    core, apps = k.core, k.apps
    ns = module.params["namespace"]
    if module.params["state"] == "absent":
        pod_name = module.params["pod"]
        path = module.params["path"]
        if not node.HEAP_SNAPSHOT_RE.match(posixpath.basename(path)):
            raise OperatorError(f"refusing to delete {path}: not a heap snapshot file name")
        ex = Exec(core, ns, pod_name, module.params["container"] or "")
        if not module.check_mode:
            ex.check(["rm", "-f", path], f"deleting {path}")
        return {"changed": True, "pod": pod_name, "container": module.params["container"], "path": path}
    pod = pick_pod(module, core, apps)
    result: dict[str, Any] = {"pod": pod.metadata.name, "pod_uid": pod.metadata.uid,
                              "container": pick_container(module, pod)}
    if module.params["pod_uid"] and module.params["pod_uid"] != pod.metadata.uid:
        raise OperatorError(f"pod {ns}/{pod.metadata.name} was replaced since the check (uid changed); refusing")
    ex = Exec(core, ns, result["pod"], result["container"])
    result.update(inspect(ex, f"{ns}/{result['pod']} container {result['container']}"))
    if module.params["state"] == "inspected" or module.check_mode:
        return {"changed": False, **result}
    result.update(capture(module, ex, result))
    return {"changed": True, **result}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "namespace": {"type": "str", "required": True},
            "pod": {"type": "str"},
            "deployment": {"type": "str"},
            "container": {"type": "str"},
            "state": {"type": "str", "choices": ["inspected", "captured", "absent"], "default": "inspected"},
            "pod_uid": {"type": "str"},
            "dest": {"type": "path"},
            "path": {"type": "str"},
            **node.POLL_OPTIONS,
            **kube.CONNECTION_OPTIONS,
        },
        required_one_of=[("pod", "deployment")],
        required_if=[("state", "captured", ("dest",)), ("state", "absent", ("path", "pod"))],
        supports_check_mode=True,
    )
    kube.run_module(module, lambda: snapshot(module))


if __name__ == "__main__":
    main()
