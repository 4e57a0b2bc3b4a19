"""A fake Kubernetes API server that speaks the real HTTP API, for tests.

It runs aiohttp on 127.0.0.1 (free port) in a background thread with its own event loop, and is good
enough for the official ``kubernetes`` Python client (v37, strict response models), for the
kubernetes.core modules (k8s, k8s_info, k8s_scale, k8s_exec, k8s_cp) and for ``kubectl`` (get, scale,
rollout status, exec over websocket).

Supported:
- Discovery: ``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/apps/v1`` (legacy discovery;
  clients asking for aggregated discovery fall back to it), ``/healthz``, ``/readyz``.
- Resources: Namespaces, Pods, ConfigMaps, Secrets (v1); Deployments, ReplicaSets (apps/v1).
  GET, LIST (``labelSelector`` with =, ==, !=, in, notin, exists, !exists; ``fieldSelector`` on
  metadata.name / metadata.namespace), CREATE, PUT, DELETE (owner-reference cascade, namespace
  deletion removes its contents), PATCH with json-patch, merge-patch, strategic-merge-patch
  (dicts merged, lists replaced except lists of named items such as containers/env/volumes, which
  merge by name) and apply-patch (treated as a strategic merge), ``dryRun``.
- ``resourceVersion`` optimistic concurrency: a PUT/PATCH carrying a stale resourceVersion gets 409.
  ``metadata.generation`` grows on spec changes only.
- ``?watch=true`` on every list endpoint (newline-delimited JSON events, ``resourceVersion`` resume,
  410 ERROR event when too old, ``timeoutSeconds``, ``sendInitialEvents`` + initial-events-end bookmark).
- ``deployments/scale`` subresource (autoscaling/v1 Scale, GET/PUT/PATCH).
- Pod exec over websocket (``/api/v1/namespaces/{ns}/pods/{pod}/exec``), subprotocols
  v5/v4.channel.k8s.io: stdout on channel 1, stderr on 2, the v4 status object on channel 3 (exit code
  in ``details.causes[ExitCode]`` exactly as the real API, so clients see non-zero exits). Commands are
  answered by a pluggable handler, see ``set_exec_handler``. With ``stdin=true`` the fake collects
  stdin until the client closes it (v5 close signal or websocket close) or sends nothing for
  ``stdin_idle`` seconds; clients that ask for stdin and never send any (k8s_cp's copy-out) work.
- ``as=Table`` responses for kubectl's human-readable ``get`` (NAME/READY/UP-TO-DATE/... columns).
- A tiny controller: a Deployment whose pod template changes gets a new ReplicaSet (owned by it, next
  ``deployment.kubernetes.io/revision``, ``pod-template-hash`` label) or, when the template equals an
  older ReplicaSet's (a rollback), that ReplicaSet with a new revision; the other ReplicaSets scale to 0.
  ReplicaSets create/delete Pods (Pending, then Running and Ready after ``ready_delay`` seconds;
  Pods that tests apply without a status are Running and Ready at once); status (replicas,
  updated/ready/available, observedGeneration, Available/Progressing conditions) follows. Objects whose
  owner is gone are garbage collected.

Not supported: propagationPolicy (deletes always cascade), list paging (``limit`` returns everything),
rolling-update pacing (old ReplicaSets go to 0 at once), authentication (any token is accepted), TLS,
protobuf/CBOR, server-side apply field management, admission/validation beyond required names, other
resource types, pod logs, port-forward, tty/resize on exec.

Test API::

    with FakeKubeAPI() as kube:
        kube.kubeconfig(tmp_path / "kubeconfig")
        kube.apply({"apiVersion": "apps/v1", "kind": "Deployment", ...})   # create or replace
        kube.get("Deployment", "prod", "api")      # -> dict or None
        kube.list("ReplicaSet", "prod")
        kube.set_exec_handler(lambda ns, pod, container, command, stdin: (b"out", b"", 0))
        kube.exec_log                              # [(ns, pod, container, command), ...]
        kube.wait_until(lambda: ..., timeout=10)
"""

from __future__ import annotations

import asyncio
import base64
import collections
import copy
import datetime
import hashlib
import json
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import WSMsgType, web

from tests.support.waiting import wait_for

ExecHandler = Callable[[str, str, str, list[str], bytes | None], tuple[bytes, bytes, int]]
Obj = dict[str, Any]

REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
MERGE_BY_NAME = {
    "containers",
    "initContainers",
    "env",
    "volumes",
    "volumeMounts",
    "ports",
    "imagePullSecrets",
}
SERVER_VERSION = {
    "major": "1",
    "minor": "35",
    "gitVersion": "v1.35.0-fake",
    "gitCommit": "fake",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class ResType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short: tuple[str, ...] = ()
    subresources: tuple[tuple[str, str, str, tuple[str, ...]], ...] = ()  # (name, kind, group/version, verbs)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
TYPES = [
    ResType("", "v1", "namespaces", "Namespace", False, ("ns",)),
    ResType(
        "",
        "v1",
        "pods",
        "Pod",
        True,
        ("po",),
        (("exec", "PodExecOptions", "v1", ("create", "get")), ("status", "Pod", "v1", ("get",))),
    ),
    ResType("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    ResType("", "v1", "secrets", "Secret", True),
    ResType(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        True,
        ("deploy",),
        (
            ("scale", "Scale", "autoscaling/v1", ("get", "patch", "update")),
            ("status", "Deployment", "apps/v1", ("get", "patch", "update")),
        ),
    ),
    ResType(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        True,
        ("rs",),
        (
            ("scale", "Scale", "autoscaling/v1", ("get", "patch", "update")),
            ("status", "ReplicaSet", "apps/v1", ("get", "patch", "update")),
        ),
    ),
]
BY_KIND = {t.kind: t for t in TYPES}
BY_PATH = {(t.group, t.version, t.plural): t for t in TYPES}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def not_found(rt: ResType, name: str) -> ApiError:
    res = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
    return ApiError(404, "NotFound", f'{res} "{name}" not found', {"name": name, "group": rt.group, "kind": rt.plural})


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------- selectors

_TERM = re.compile(
    r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9_./-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$"
)


def parse_label_selector(text: str) -> list[tuple[str, str, set[str]]]:
    """Parse a label selector string into (key, op, values) terms; op in =, !=, in, notin, exists, !."""
    terms, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    terms.append(cur)
    out = []
    for term in (t for t in terms if t.strip()):
        m = _TERM.match(term)
        if not m:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
        neg, key, op, val, setop, setvals = m.groups()
        if op:
            out.append((key, "!=" if op == "!=" else "=", {val}))
        elif setop:
            out.append((key, setop, {v.strip() for v in setvals.split(",") if v.strip()}))
        else:
            out.append((key, "!" if neg else "exists", set()))
    return out


def labels_match(terms: list[tuple[str, str, set[str]]], labels: dict[str, str]) -> bool:
    for key, op, vals in terms:
        has, val = key in labels, labels.get(key)
        ok = {
            "=": has and val in vals,
            "in": has and val in vals,
            "!=": not has or val not in vals,
            "notin": not has or val not in vals,
            "exists": has,
            "!": not has,
        }[op]
        if not ok:
            return False
    return True


def selector_string(match_labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))


def field_match(selector: str, obj: Obj) -> bool:
    for term in (t for t in selector.split(",") if t.strip()):
        m = re.match(r"^\s*([\w.]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid field selector: {term!r}")
        path, op, want = m.groups()
        if path not in ("metadata.name", "metadata.namespace"):
            raise ApiError(400, "BadRequest", f'field label not supported: "{path}"')
        have = obj["metadata"].get(path.split(".")[1], "")
        if (have == want) != (op != "!="):
            return False
    return True


# ---------------------------------------------------------------------------------------------- patches


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def strategic_merge(target: Any, patch: Any, key: str = "") -> Any:
    """A simple strategic merge: dicts merge, lists replace, lists of named items merge by name."""
    if isinstance(patch, dict):
        if patch.get("$patch") == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
        result = dict(target) if isinstance(target, dict) else {}
        for k, v in patch.items():
            if k.startswith("$"):
                continue
            if v is None:
                result.pop(k, None)
            else:
                result[k] = strategic_merge(result.get(k), v, k)
        return result
    if (
        isinstance(patch, list)
        and key in MERGE_BY_NAME
        and isinstance(target, list)
        and all(isinstance(i, dict) and "name" in i for i in [*patch, *target])
    ):
        merged = [copy.deepcopy(i) for i in target]
        for item in patch:
            idx = next((n for n, cur in enumerate(merged) if cur["name"] == item["name"]), None)
            if item.get("$patch") == "delete":
                if idx is not None:
                    merged.pop(idx)
            elif idx is None:
                merged.append(strategic_merge({}, item))
            else:
                merged[idx] = strategic_merge(merged[idx], item)
        return merged
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc: Any, ops: list[Obj]) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    doc = copy.deepcopy(doc)

    def walk(parts: list[str]) -> tuple[Any, str]:
        cur = doc
        for p in parts[:-1]:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur, parts[-1]

    def get(path: str) -> Any:
        cur = doc
        for p in _pointer(path):
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur

    def remove(path: str) -> Any:
        parent, last = walk(_pointer(path))
        return parent.pop(int(last)) if isinstance(parent, list) else parent.pop(last)

    def add(path: str, value: Any) -> None:
        parent, last = walk(_pointer(path))
        if isinstance(parent, list):
            parent.insert(len(parent) if last == "-" else int(last), value)
        else:
            parent[last] = value

    for op in ops:
        try:
            kind, path = op["op"], op["path"]
            if kind == "add":
                add(path, copy.deepcopy(op["value"]))
            elif kind == "remove":
                remove(path)
            elif kind == "replace":
                remove(path)
                add(path, copy.deepcopy(op["value"]))
            elif kind == "move":
                add(path, remove(op["from"]))
            elif kind == "copy":
                add(path, copy.deepcopy(get(op["from"])))
            elif kind == "test":
                if get(path) != op["value"]:
                    raise ApiError(422, "Invalid", f"test operation failed at {path}")
            else:
                raise ApiError(422, "Invalid", f"unknown json-patch op {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(422, "Invalid", f"json-patch {op!r} failed: {exc!r}") from exc
    return doc


def template_hash(template: Obj) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(alphabet[b % len(alphabet)] for b in digest[:10])


def _prune(value: Any) -> Any:
    """Drop nulls and empty maps/lists, as typed clients send `creationTimestamp: null`, `resources: {}`."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def without_hash(template: Obj) -> Obj:
    """The pod template as the controller compares it: no pod-template-hash label, nulls/empties pruned."""
    t = copy.deepcopy(template)
    (t.get("metadata") or {}).get("labels", {}).pop(HASH_LABEL, None)
    return _prune(t)


def _rev(obj: Obj) -> int:
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


# ---------------------------------------------------------------------------------------------- the fake


@dataclass
class _Watcher:
    rt: ResType
    namespace: str | None
    labels: list[tuple[str, str, set[str]]]
    fields: str
    queue: asyncio.Queue[Obj | None]


class FakeKubeAPI:
    """The fake API server plus a tiny Deployment/ReplicaSet controller. See the module docstring."""

    def __init__(self, *, ready_delay: float = 0.2, tick: float = 0.05, stdin_idle: float = 0.5) -> None:
        self.ready_delay, self.tick, self.stdin_idle = ready_delay, tick, stdin_idle
        self.host, self.port = "127.0.0.1", 0
        self.exec_log: list[tuple[str, str, str, list[str]]] = []
        self._lock = threading.RLock()
        self._objects: dict[tuple[str, str, str], Obj] = {}  # (kind, namespace, name) -> object
        self._rv = 100
        self._events: collections.deque[tuple[int, str, str, Obj]] = collections.deque(maxlen=5000)
        self._watchers: list[_Watcher] = []
        self._pod_ready_at: dict[str, float] = {}  # pod uid -> monotonic time it becomes ready
        self._exec_handler: ExecHandler = self._default_exec
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeKubeAPI:
        with socket.socket() as s:
            s.bind((self.host, 0))
            self.port = s.getsockname()[1]
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve(ready))
            except BaseException as exc:  # surfaced to start()
                errors.append(exc)
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-kube-api", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise RuntimeError(f"fake kube API failed to start: {errors[0]!r}")
        return self

    def stop(self) -> None:
        if self._loop and self._stopping and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(10)

    def __enter__(self) -> FakeKubeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self, ready: threading.Event) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._dispatch)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        controller = asyncio.create_task(self._controller())
        ready.set()
        await self._stopping.wait()
        controller.cancel()
        with self._lock:
            for w in self._watchers:
                w.queue.put_nowait(None)
        await self._runner.cleanup()
        await asyncio.get_running_loop().shutdown_default_executor()  # exec handler threads

    def kubeconfig(self, path: str | Path, *, context: str = "fake", namespace: str = "default") -> Path:
        """Write a kubeconfig pointing at this server (current context `context`); return its path."""
        path = Path(path)
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": context,
                    "preferences": {},
                    "clusters": [{"name": context, "cluster": {"server": self.url}}],
                    "users": [{"name": context, "user": {"token": "fake-token"}}],
                    "contexts": [
                        {
                            "name": context,
                            "context": {"cluster": context, "user": context, "namespace": namespace},
                        }
                    ],
                }
            )
        )
        return path

    # ------------------------------------------------------------------ test API

    def set_exec_handler(self, fn: ExecHandler) -> None:
        """fn(namespace, pod, container, command, stdin) -> (stdout, stderr, exit_code) answers pod exec."""
        self._exec_handler = fn

    @staticmethod
    def _default_exec(
        ns: str, pod: str, container: str, command: list[str], stdin: bytes | None
    ) -> tuple[bytes, bytes, int]:
        return b"", f"fake kube: no exec handler for {command!r}\n".encode(), 127

    def apply(self, obj: Obj) -> Obj:
        """Create or replace an object (no resourceVersion check); creates its namespace if missing."""
        obj = copy.deepcopy(obj)
        rt = self._type_of(obj)
        meta = obj.setdefault("metadata", {})
        with self._lock:
            if rt.namespaced:
                meta.setdefault("namespace", "default")
                if not self._find("Namespace", "", meta["namespace"]):
                    self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": meta["namespace"]}})
            ns = meta.get("namespace", "") if rt.namespaced else ""
            if self._find(rt.kind, ns, meta["name"]):
                meta.pop("resourceVersion", None)
                return self.replace(rt, ns, meta["name"], obj)
            return self.create(rt, ns, obj)

    def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        with self._lock:
            found = self._find(kind, namespace or "", name)
            return copy.deepcopy(found) if found else None

    def list(self, kind: str, namespace: str | None = None, label_selector: str = "") -> list[Obj]:
        terms = parse_label_selector(label_selector)
        with self._lock:
            return [
                copy.deepcopy(o)
                for (k, ns, _), o in sorted(self._objects.items())
                if k == kind
                and (namespace is None or ns == namespace)
                and labels_match(terms, o["metadata"].get("labels") or {})
            ]

    def remove(self, kind: str, namespace: str | None, name: str) -> None:
        self.delete(BY_KIND[kind], namespace or "", name)

    def wait_until(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Poll predicate until it returns something truthy (and return that); fail after timeout seconds."""
        return wait_for(predicate, timeout=timeout, interval=0.02)

    # ------------------------------------------------------------------ store (any thread, under lock)

    @staticmethod
    def _type_of(obj: Obj) -> ResType:
        rt = BY_KIND.get(obj.get("kind", ""))
        if rt is None or obj.get("apiVersion") != rt.api_version:
            raise ApiError(400, "BadRequest", f"unsupported apiVersion/kind {obj.get('apiVersion')}/{obj.get('kind')}")
        return rt

    def _find(self, kind: str, ns: str, name: str) -> Obj | None:
        return self._objects.get((kind, ns, name))

    def _commit(self, rt: ResType, event: str, obj: Obj) -> Obj:
        meta = obj["metadata"]
        key = (rt.kind, meta.get("namespace", ""), meta["name"])
        self._rv += 1
        if event == "DELETED":
            self._objects.pop(key, None)
        else:
            meta["resourceVersion"] = str(self._rv)
            self._objects[key] = obj
        snapshot = copy.deepcopy(obj)
        if event == "DELETED":
            snapshot["metadata"]["resourceVersion"] = str(self._rv)
        self._events.append((self._rv, event, rt.kind, snapshot))
        for w in self._watchers:
            if self._watch_wants(w, snapshot) and self._loop and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(w.queue.put_nowait, {"type": event, "object": snapshot})
        return copy.deepcopy(obj)

    @staticmethod
    def _watch_wants(w: _Watcher, obj: Obj) -> bool:
        meta = obj["metadata"]
        return (
            obj["kind"] == w.rt.kind
            and (w.namespace is None or meta.get("namespace") == w.namespace)
            and labels_match(w.labels, meta.get("labels") or {})
            and field_match(w.fields, obj)
        )

    def create(self, rt: ResType, ns: str, obj: Obj, dry_run: bool = False) -> Obj:
        obj = copy.deepcopy(obj)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
        if not meta.get("name"):
            raise ApiError(422, "Invalid", f"{rt.kind}.{rt.group or 'core'} is invalid: metadata.name: Required value")
        with self._lock:
            if rt.namespaced:
                if meta.get("namespace", ns) != ns:
                    raise ApiError(400, "BadRequest", "the namespace of the object does not match the request")
                meta["namespace"] = ns
                if not self._find("Namespace", "", ns):
                    raise not_found(BY_KIND["Namespace"], ns)
            if self._find(rt.kind, ns, meta["name"]):
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{rt.plural} "{meta["name"]}" already exists',
                    {"name": meta["name"], "kind": rt.plural},
                )
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
            meta.pop("resourceVersion", None)
            self._default(rt, obj)
            if dry_run:
                return obj
            return self._commit(rt, "ADDED", obj)

    def replace(self, rt: ResType, ns: str, name: str, obj: Obj, dry_run: bool = False, subresource: str = "") -> Obj:
        obj = copy.deepcopy(obj)
        with self._lock:
            cur = self._find(rt.kind, ns, name)
            if cur is None:
                raise not_found(rt, name)
            meta = obj.setdefault("metadata", {})
            if meta.get("name", name) != name:
                raise ApiError(400, "BadRequest", "the name of the object does not match the request")
            rv = meta.get("resourceVersion")
            if rv and rv != cur["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f"Operation cannot be fulfilled on {rt.plural}.{rt.group or ''} "
                    f'"{name}": the object has been modified; please apply your changes to the '
                    "latest version and try again",
                    {"name": name, "kind": rt.plural},
                )
            if subresource == "status":
                obj = {**copy.deepcopy(cur), "status": obj.get("status", {})}
            elif rt.kind not in ("Pod",) or "status" not in obj:
                obj["status"] = copy.deepcopy(cur.get("status", {}))
            obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
            meta = obj["metadata"]
            meta["resourceVersion"] = cur["metadata"]["resourceVersion"]
            for k in ("uid", "creationTimestamp", "namespace"):
                if k in cur["metadata"]:
                    meta[k] = cur["metadata"][k]
            meta["name"] = name
            meta["generation"] = cur["metadata"].get("generation", 1)
            self._default(rt, obj)
            if obj.get("spec") != cur.get("spec"):
                meta["generation"] += 1
            if obj == cur:
                return copy.deepcopy(cur)  # no-op updates do not bump resourceVersion
            if dry_run:
                return obj
            return self._commit(rt, "MODIFIED", obj)

    def patch(
        self,
        rt: ResType,
        ns: str,
        name: str,
        content_type: str,
        body: bytes,
        dry_run: bool = False,
        subresource: str = "",
    ) -> Obj:
        with self._lock:
            cur = self._find(rt.kind, ns, name)
            if cur is None:
                raise not_found(rt, name)
            ctype = content_type.split(";")[0].strip()
            try:
                doc = yaml.safe_load(body) if ctype == "application/apply-patch+yaml" else json.loads(body)
            except (ValueError, yaml.YAMLError) as exc:
                raise ApiError(400, "BadRequest", f"invalid patch body: {exc}") from exc
            if ctype == "application/json-patch+json":
                new = json_patch(cur, doc)
            elif ctype == "application/merge-patch+json":
                new = merge_patch(cur, doc)
            elif ctype in ("application/strategic-merge-patch+json", "application/apply-patch+yaml"):
                new = strategic_merge(cur, doc)
            else:
                raise ApiError(
                    415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {ctype}"
                )
            # A resourceVersion the patch itself carries is a precondition: replace() answers 409 if stale.
            return self.replace(rt, ns, name, new, dry_run, subresource)

    def delete(self, rt: ResType, ns: str, name: str, dry_run: bool = False) -> Obj:
        with self._lock:
            cur = self._find(rt.kind, ns, name)
            if cur is None:
                raise not_found(rt, name)
            if not dry_run:
                self._commit(rt, "DELETED", copy.deepcopy(cur))
                if rt.kind == "Namespace":
                    for kind, ons, oname in list(self._objects):
                        if ons == name:
                            self.delete(BY_KIND[kind], ons, oname)
                self._collect_garbage()
            return copy.deepcopy(cur)

    def _collect_garbage(self) -> None:
        uids = {o["metadata"]["uid"] for o in self._objects.values()}
        for obj in list(self._objects.values()):
            owners = obj["metadata"].get("ownerReferences") or []
            if owners and not any(o.get("uid") in uids for o in owners):
                self._commit(BY_KIND[obj["kind"]], "DELETED", copy.deepcopy(obj))
                self._collect_garbage()
                return

    def _default(self, rt: ResType, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if rt.kind == "Namespace":
            spec.setdefault("finalizers", ["kubernetes"])
            obj.setdefault("status", {"phase": "Active"})
        elif rt.kind in ("ConfigMap", "Secret"):
            obj.pop("spec", None)
            if rt.kind == "Secret":
                obj.setdefault("type", "Opaque")
                for k, v in (obj.pop("stringData", None) or {}).items():
                    obj.setdefault("data", {})[k] = base64.b64encode(v.encode()).decode()
        elif rt.kind in ("Deployment", "ReplicaSet"):
            spec.setdefault("replicas", 1)
            if rt.kind == "Deployment":
                spec.setdefault(
                    "strategy",
                    {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                )
                spec.setdefault("revisionHistoryLimit", 10)
                spec.setdefault("progressDeadlineSeconds", 600)
            obj.setdefault("status", {"replicas": 0} if rt.kind == "ReplicaSet" else {})
            if "selector" not in spec or "template" not in spec:
                raise ApiError(422, "Invalid", f"{rt.kind} is invalid: spec.selector and spec.template are required")
        elif rt.kind == "Pod":
            spec.setdefault("nodeName", "fake-node")
            spec.setdefault("restartPolicy", "Always")
            for c in spec.get("containers") or []:
                if "name" not in c:
                    raise ApiError(422, "Invalid", "Pod is invalid: spec.containers[].name: Required value")
            if not spec.get("containers"):
                raise ApiError(422, "Invalid", "Pod is invalid: spec.containers: Required value")
            if not obj.get("status"):
                obj["status"] = self._pod_status(obj, ready=True)

    @staticmethod
    def _pod_status(pod: Obj, ready: bool) -> Obj:
        ts = now()
        flag = "True" if ready else "False"
        status: Obj = {
            "phase": "Running" if ready else "Pending",
            "hostIP": "10.0.0.1",
            "podIP": f"10.1.0.{random.randint(2, 250)}",
            "startTime": ts,
            "qosClass": "BestEffort",
            "conditions": [
                {"type": t, "status": "True" if t == "PodScheduled" else flag, "lastTransitionTime": ts}
                for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": ready,
                    "restartCount": 0,
                    "started": ready,
                    "containerID": "containerd://" + uuid.uuid4().hex if ready else None,
                    "state": {"running": {"startedAt": ts}} if ready else {"waiting": {"reason": "ContainerCreating"}},
                }
                for c in pod["spec"]["containers"]
            ],
        }
        for cs in status["containerStatuses"]:
            if cs["containerID"] is None:
                del cs["containerID"]
        return status

    # ------------------------------------------------------------------ controller

    async def _controller(self) -> None:
        while True:
            try:
                with self._lock:
                    self._reconcile()
            except Exception as exc:  # keep the fake alive; tests see the effect
                print(f"fake kube controller error: {exc!r}")
            await asyncio.sleep(self.tick)

    def _owned(self, kind: str, owner: Obj) -> list[Obj]:
        uid, ns = owner["metadata"]["uid"], owner["metadata"]["namespace"]
        return [
            o
            for (k, ons, _), o in self._objects.items()
            if k == kind and ons == ns and any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])
        ]

    @staticmethod
    def _owner_ref(owner: Obj) -> Obj:
        return {
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def _update_if_changed(self, obj: Obj, new: Obj) -> None:
        if new != obj:
            rt = BY_KIND[obj["kind"]]
            self.replace(
                rt,
                obj["metadata"]["namespace"],
                obj["metadata"]["name"],
                {**new, "metadata": {**new["metadata"], "resourceVersion": None}},
                subresource="",
            )
            if new.get("status") != obj.get("status"):
                self.replace(
                    rt,
                    obj["metadata"]["namespace"],
                    obj["metadata"]["name"],
                    {"metadata": {}, "status": new["status"]},
                    subresource="status",
                )

    def _reconcile(self) -> None:
        for dep in [o for (k, _, _), o in list(self._objects.items()) if k == "Deployment"]:
            self._reconcile_deployment(copy.deepcopy(dep))
        for rs in [o for (k, _, _), o in list(self._objects.items()) if k == "ReplicaSet"]:
            self._reconcile_replicaset(copy.deepcopy(rs))
        clock = time.monotonic()
        pods = [o for (k, _, _), o in list(self._objects.items()) if k == "Pod"]
        for uid in set(self._pod_ready_at) - {p["metadata"]["uid"] for p in pods}:
            del self._pod_ready_at[uid]  # deleted before it became ready
        for pod in pods:
            ready_at = self._pod_ready_at.get(pod["metadata"]["uid"])
            if ready_at is not None and clock >= ready_at:
                del self._pod_ready_at[pod["metadata"]["uid"]]
                self._update_if_changed(pod, {**copy.deepcopy(pod), "status": self._pod_status(pod, ready=True)})
        for dep in [o for (k, _, _), o in list(self._objects.items()) if k == "Deployment"]:
            self._deployment_status(copy.deepcopy(dep))

    def _reconcile_deployment(self, dep: Obj) -> None:
        ns, spec = dep["metadata"]["namespace"], dep["spec"]
        owned = self._owned("ReplicaSet", dep)
        template = without_hash(spec["template"])
        current = next((rs for rs in owned if without_hash(rs["spec"]["template"]) == template), None)
        top = max((_rev(rs) for rs in owned), default=0)
        if current is None:
            phash = template_hash(template)
            tmpl = copy.deepcopy(template)
            tmpl.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = phash
            selector = copy.deepcopy(spec["selector"])
            selector.setdefault("matchLabels", {})[HASH_LABEL] = phash
            labels = {**(tmpl["metadata"].get("labels") or {})}
            current = self.create(
                BY_KIND["ReplicaSet"],
                ns,
                {
                    "metadata": {
                        "name": f"{dep['metadata']['name']}-{phash}",
                        "labels": labels,
                        "annotations": {REVISION: str(top + 1)},
                        "ownerReferences": [self._owner_ref(dep)],
                    },
                    "spec": {"replicas": spec["replicas"], "selector": selector, "template": tmpl},
                },
            )
        elif _rev(current) < top:  # rolled back to an older template: that ReplicaSet gets the next revision
            new = copy.deepcopy(current)
            new["metadata"].setdefault("annotations", {})[REVISION] = str(top + 1)
            self._update_if_changed(current, new)
        current = self._find("ReplicaSet", ns, current["metadata"]["name"]) or current
        for rs in self._owned("ReplicaSet", dep):
            want = spec["replicas"] if rs["metadata"]["uid"] == current["metadata"]["uid"] else 0
            if rs["spec"].get("replicas") != want:
                self._update_if_changed(rs, {**copy.deepcopy(rs), "spec": {**rs["spec"], "replicas": want}})
        revision = str(_rev(current))
        if (dep["metadata"].get("annotations") or {}).get(REVISION) != revision:
            new = copy.deepcopy(dep)
            new["metadata"].setdefault("annotations", {})[REVISION] = revision
            self._update_if_changed(dep, new)

    def _reconcile_replicaset(self, rs: Obj) -> None:
        ns = rs["metadata"]["namespace"]
        pods = sorted(self._owned("Pod", rs), key=lambda p: p["metadata"]["creationTimestamp"])
        want = rs["spec"].get("replicas", 1)
        for _ in range(want - len(pods)):
            tmpl = copy.deepcopy(rs["spec"]["template"])
            meta = tmpl.get("metadata") or {}
            pod = self.create(
                BY_KIND["Pod"],
                ns,
                {
                    "metadata": {
                        **meta,
                        "generateName": rs["metadata"]["name"] + "-",
                        "ownerReferences": [self._owner_ref(rs)],
                    },
                    "spec": tmpl["spec"],
                    "status": self._pod_status(tmpl, ready=False),
                },
            )
            self._pod_ready_at[pod["metadata"]["uid"]] = time.monotonic() + self.ready_delay
        for pod in pods[want:] if want < len(pods) else []:
            self.delete(BY_KIND["Pod"], ns, pod["metadata"]["name"])
        pods = self._owned("Pod", rs)
        ready = sum(1 for p in pods if p.get("status", {}).get("phase") == "Running")
        status = {
            "replicas": len(pods),
            "fullyLabeledReplicas": len(pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": rs["metadata"]["generation"],
        }
        self._update_if_changed(rs, {**rs, "status": status})

    def _deployment_status(self, dep: Obj) -> None:
        owned = self._owned("ReplicaSet", dep)
        template = without_hash(dep["spec"]["template"])
        current = [rs for rs in owned if without_hash(rs["spec"]["template"]) == template]
        total = sum(rs["status"].get("replicas", 0) for rs in owned)
        updated = sum(rs["status"].get("replicas", 0) for rs in current)
        ready = sum(rs["status"].get("readyReplicas", 0) for rs in owned)
        want = dep["spec"]["replicas"]
        complete = updated == want == total and ready == want
        old = {c["type"]: c for c in dep.get("status", {}).get("conditions", [])}

        def cond(ctype: str, status: str, reason: str, message: str) -> Obj:
            prev = old.get(ctype)
            if prev and (prev["status"], prev["reason"]) == (status, reason):
                return prev
            ts = now()
            return {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": message,
                "lastUpdateTime": ts,
                "lastTransitionTime": ts,
            }

        name = dep["metadata"]["name"]
        rs_name = current[0]["metadata"]["name"] if current else name
        status = {
            "observedGeneration": dep["metadata"]["generation"],
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(want - ready, 0),
            "conditions": [
                cond(
                    "Available",
                    "True" if ready >= want else "False",
                    "MinimumReplicasAvailable" if ready >= want else "MinimumReplicasUnavailable",
                    "Deployment has minimum availability."
                    if ready >= want
                    else "Deployment does not have minimum availability.",
                ),
                cond(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                    f'ReplicaSet "{rs_name}" has successfully progressed.'
                    if complete
                    else f'ReplicaSet "{rs_name}" is progressing.',
                ),
            ],
        }
        if not status["unavailableReplicas"]:
            del status["unavailableReplicas"]
        self._update_if_changed(dep, {**dep, "status": status})

    # ------------------------------------------------------------------ HTTP

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._route(request)
        except ApiError as err:
            return web.json_response(err.status(), status=err.code)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if request.path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        if parts == ["version"]:
            return web.json_response(SERVER_VERSION)
        if parts == ["api"]:
            return web.json_response(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}
                    ],
                }
            )
        if parts == ["apis"]:
            groups = sorted({t.group for t in TYPES if t.group})
            return web.json_response(
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [
                        {
                            "name": g,
                            "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
                            "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"},
                        }
                        for g in groups
                    ],
                }
            )
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) == 2:
            return web.json_response(
                {
                    "kind": "APIGroup",
                    "apiVersion": "v1",
                    "name": parts[1],
                    "versions": [{"groupVersion": f"{parts[1]}/v1", "version": "v1"}],
                    "preferredVersion": {"groupVersion": f"{parts[1]}/v1", "version": "v1"},
                }
            )
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            return web.json_response(self._resource_list(group, version))
        return await self._resource(request, group, version, rest)

    @staticmethod
    def _resource_list(group: str, version: str) -> Obj:
        gv = f"{group}/{version}" if group else version
        resources = []
        for t in TYPES:
            if (t.group, t.version) != (group, version):
                continue
            resources.append(
                {
                    "name": t.plural,
                    "singularName": t.kind.lower(),
                    "namespaced": t.namespaced,
                    "kind": t.kind,
                    "verbs": list(VERBS),
                    "shortNames": list(t.short),
                }
            )
            for sub, kind, sgv, verbs in t.subresources:
                entry = {
                    "name": f"{t.plural}/{sub}",
                    "singularName": "",
                    "namespaced": t.namespaced,
                    "kind": kind,
                    "verbs": list(verbs),
                }
                if "/" in sgv:
                    entry["group"], entry["version"] = sgv.split("/")
                resources.append(entry)
        if not resources:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({gv})")
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}

    async def _resource(self, request: web.Request, group: str, version: str, rest: list[str]) -> web.StreamResponse:
        ns: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        rt = BY_PATH.get((group, version, rest[0]))
        if rt is None or (ns is not None and not rt.namespaced):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        if len(rest) > 3 or (sub and sub not in {s[0] for s in rt.subresources}):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if rt.namespaced and name is not None and ns is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        q, method = request.query, request.method
        dry = "dryRun" in q
        if name is None:
            if method == "GET":
                if q.get("watch") in ("true", "1", "True"):
                    return await self._watch(request, rt, ns)
                return self._respond(request, rt, self._list(rt, ns, q))
            if method == "POST":
                obj = self.create(rt, ns or "", await self._body(request), dry)
                return web.json_response(obj, status=201)
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on a collection")
        key_ns = ns or ""
        if sub == "exec":
            return await self._exec(request, key_ns, name)
        if sub == "scale":
            return await self._scale(request, rt, key_ns, name, dry)
        if method == "GET":
            obj = self.get(rt.kind, key_ns, name)
            if obj is None:
                raise not_found(rt, name)
            return self._respond(request, rt, obj)
        if method == "PUT":
            return web.json_response(self.replace(rt, key_ns, name, await self._body(request), dry, sub))
        if method == "PATCH":
            body = await request.read()
            return web.json_response(self.patch(rt, key_ns, name, request.content_type, body, dry, sub))
        if method == "DELETE":
            obj = self.delete(rt, key_ns, name, dry)
            return web.json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {
                        "name": name,
                        "group": rt.group,
                        "kind": rt.plural,
                        "uid": obj["metadata"]["uid"],
                    },
                }
            )
        raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed")

    @staticmethod
    async def _body(request: web.Request) -> Obj:
        raw = await request.read()
        try:
            body = yaml.safe_load(raw) if "yaml" in request.content_type else json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError(400, "BadRequest", f"invalid body: {exc}") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be an object")
        return body

    def _list(self, rt: ResType, ns: str | None, q: Any) -> Obj:
        terms = parse_label_selector(q.get("labelSelector", ""))
        fields = q.get("fieldSelector", "")
        with self._lock:
            items = [
                copy.deepcopy(o)
                for o in self.list(rt.kind, ns)
                if labels_match(terms, o["metadata"].get("labels") or {}) and field_match(fields, o)
            ]
            rv = str(self._rv)
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": rv},
            "items": items,
        }

    def _respond(self, request: web.Request, rt: ResType, obj: Obj) -> web.Response:
        if "as=Table" in request.headers.get("Accept", ""):
            return web.json_response(
                self._table(
                    rt,
                    obj.get("items", [obj]) if "items" in obj else [obj],
                    obj["metadata"].get("resourceVersion", ""),
                )
            )
        return web.json_response(obj)

    @staticmethod
    def _table(rt: ResType, items: list[Obj], rv: str) -> Obj:
        def age(o: Obj) -> str:
            created = datetime.datetime.strptime(o["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")
            secs = int((datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - created).total_seconds())
            return f"{secs}s" if secs < 120 else f"{secs // 60}m"

        def images(o: Obj) -> str:
            return ",".join(c.get("image", "") for c in o["spec"]["template"]["spec"].get("containers", []))

        cols: list[tuple[str, Callable[[Obj], Any]]] = [("Name", lambda o: o["metadata"]["name"])]
        st = lambda o, k: o.get("status", {}).get(k, 0)  # noqa: E731
        if rt.kind == "Deployment":
            cols += [
                ("Ready", lambda o: f"{st(o, 'readyReplicas')}/{o['spec']['replicas']}"),
                ("Up-to-date", lambda o: st(o, "updatedReplicas")),
                ("Available", lambda o: st(o, "availableReplicas")),
                ("Age", age),
                ("Images", images),
            ]
        elif rt.kind == "ReplicaSet":
            cols += [
                ("Desired", lambda o: o["spec"]["replicas"]),
                ("Current", lambda o: st(o, "replicas")),
                ("Ready", lambda o: st(o, "readyReplicas")),
                ("Age", age),
                ("Images", images),
            ]
        elif rt.kind == "Pod":

            def pod_ready(o: Obj) -> str:
                ready = sum(c.get("ready", False) for c in o["status"].get("containerStatuses", []))
                return f"{ready}/{len(o['spec']['containers'])}"

            cols += [
                ("Ready", pod_ready),
                ("Status", lambda o: o["status"].get("phase", "")),
                ("Restarts", lambda o: 0),
                ("Age", age),
            ]
        else:
            cols += [("Age", age)]
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": rv},
            "columnDefinitions": [
                {
                    "name": n,
                    "type": "integer"
                    if n in ("Up-to-date", "Available", "Desired", "Current", "Restarts")
                    else "string",
                    "format": "name" if n == "Name" else "",
                    "description": n,
                    "priority": 1 if n == "Images" else 0,
                }
                for n, _ in cols
            ],
            "rows": [
                {
                    "cells": [fn(o) for _, fn in cols],
                    "object": {
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o["metadata"],
                    },
                }
                for o in items
            ],
        }

    async def _watch(self, request: web.Request, rt: ResType, ns: str | None) -> web.StreamResponse:
        q = request.query
        watcher = _Watcher(
            rt,
            ns,
            parse_label_selector(q.get("labelSelector", "")),
            q.get("fieldSelector", ""),
            asyncio.Queue(),
        )
        since = q.get("resourceVersion", "")
        with self._lock:
            field_match(watcher.fields, {"metadata": {}})  # validate early
            if q.get("sendInitialEvents") == "true" or since in ("", "0"):
                backlog = [{"type": "ADDED", "object": o} for o in self._list(rt, ns, q)["items"]]
                if q.get("sendInitialEvents") == "true":
                    backlog.append(
                        {
                            "type": "BOOKMARK",
                            "object": {
                                "kind": rt.kind,
                                "apiVersion": rt.api_version,
                                "metadata": {
                                    "resourceVersion": str(self._rv),
                                    "annotations": {"k8s.io/initial-events-end": "true"},
                                },
                            },
                        }
                    )
            else:
                oldest = self._events[0][0] if self._events else self._rv + 1
                if int(since) < oldest - 1 and int(since) < self._rv:
                    backlog = [
                        {
                            "type": "ERROR",
                            "object": ApiError(
                                410, "Expired", f"too old resource version: {since} ({oldest})"
                            ).status(),
                        }
                    ]
                else:
                    backlog = [
                        {"type": ev, "object": copy.deepcopy(o)}
                        for rv, ev, kind, o in self._events
                        if rv > int(since) and self._watch_wants(watcher, o)
                    ]
            self._watchers.append(watcher)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        deadline = time.monotonic() + float(q.get("timeoutSeconds", "1800"))
        try:
            for event in backlog:
                await resp.write(json.dumps(event).encode() + b"\n")
            if backlog and backlog[-1]["type"] == "ERROR":
                return resp
            while (left := deadline - time.monotonic()) > 0:
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), timeout=left)
                except TimeoutError:
                    break
                if event is None:
                    break
                await resp.write(json.dumps(event).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            with self._lock:
                self._watchers.remove(watcher)
        return resp

    async def _scale(self, request: web.Request, rt: ResType, ns: str, name: str, dry: bool) -> web.Response:
        def scale_of(obj: Obj) -> Obj:
            meta = obj["metadata"]
            return {
                "kind": "Scale",
                "apiVersion": "autoscaling/v1",
                "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")},
                "spec": {"replicas": obj["spec"]["replicas"]},
                "status": {
                    "replicas": obj.get("status", {}).get("replicas", 0),
                    "selector": selector_string(obj["spec"]["selector"].get("matchLabels", {})),
                },
            }

        cur = self.get(rt.kind, ns, name)
        if cur is None:
            raise not_found(rt, name)
        if request.method == "GET":
            return web.json_response(scale_of(cur))
        if request.method == "PUT":
            scale = await self._body(request)
        elif request.method == "PATCH":
            body = await request.read()
            ctype = request.content_type
            doc = json.loads(body)
            scale = (
                json_patch(scale_of(cur), doc)
                if ctype == "application/json-patch+json"
                else merge_patch(scale_of(cur), doc)
            )
        else:
            raise ApiError(405, "MethodNotAllowed", f"{request.method} is not allowed on scale")
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, "Invalid", "Scale is invalid: spec.replicas: must be a non-negative integer")
        rv = (scale.get("metadata") or {}).get("resourceVersion") or cur["metadata"]["resourceVersion"]
        new = {
            **cur,
            "metadata": {**cur["metadata"], "resourceVersion": rv},
            "spec": {**cur["spec"], "replicas": replicas},
        }
        return web.json_response(scale_of(self.replace(rt, ns, name, new, dry)))

    async def _exec(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        pod = self.get("Pod", ns, name)
        if pod is None:
            raise not_found(BY_KIND["Pod"], name)
        q = request.query
        names = [c["name"] for c in pod["spec"]["containers"]]
        container = q.get("container") or names[0]
        if container not in names:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        command = q.getall("command", [])
        if not command:
            raise ApiError(400, "BadRequest", "you must specify at least 1 command")
        ws = web.WebSocketResponse(protocols=("v5.channel.k8s.io", "v4.channel.k8s.io"), max_msg_size=0)
        if not ws.can_prepare(request).ok:
            raise ApiError(400, "BadRequest", "Upgrade request required (websocket exec only)")
        await ws.prepare(request)
        want_stdin = q.get("stdin", "").lower() in ("true", "1")
        stdin: bytes | None = None
        if want_stdin:
            stdin = await self._read_stdin(ws)
        self.exec_log.append((ns, name, container, list(command)))
        loop = asyncio.get_running_loop()
        try:
            out, err, code = await loop.run_in_executor(
                None, self._exec_handler, ns, name, container, list(command), stdin
            )
        except Exception as exc:
            out, err, code = b"", f"fake kube exec handler failed: {exc!r}\n".encode(), 126
        try:
            for channel, data in ((1, out), (2, err)):
                if q.get("stdout" if channel == 1 else "stderr", "true").lower() in ("true", "1"):
                    for i in range(0, len(data), 256 * 1024):
                        await ws.send_bytes(bytes([channel]) + data[i : i + 256 * 1024])
            if code == 0:
                status: Obj = {"metadata": {}, "status": "Success"}
            else:
                status = {
                    "metadata": {},
                    "status": "Failure",
                    "reason": "NonZeroExitCode",
                    "message": f"command terminated with non-zero exit code: error executing command "
                    f"{command}, exit code {code}",
                    "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
                }
            await ws.send_bytes(b"\x03" + json.dumps(status).encode())
            await ws.close()
        except (ConnectionResetError, RuntimeError):
            pass  # the client went away (k8s_cp closes right after writing stdin)
        return ws

    async def _read_stdin(self, ws: web.WebSocketResponse) -> bytes:
        chunks: list[bytes] = []
        while True:
            try:
                msg = await ws.receive(timeout=self.stdin_idle)
            except TimeoutError:
                break
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
            data = msg.data.encode() if msg.type == WSMsgType.TEXT else msg.data
            if not data:
                continue
            if data[0] == 255 and data[1:2] == b"\x00":  # v5: the client closed stdin
                break
            if data[0] == 0:
                chunks.append(data[1:])
        return b"".join(chunks)
