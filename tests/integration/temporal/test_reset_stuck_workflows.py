"""playbooks/reset_stuck_workflows.yml against a real Temporal dev server and a real worker process."""

from __future__ import annotations

import socket
import uuid

import pytest
from temporalio.client import WorkflowExecutionStatus

from tests.support.paths import ROOT
from tests.support.pgcluster import free_port
from tests.support.temporal import TemporalWorker, run_playbook, stuck_and_healthy, wid
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

REASON = "INC-42 payment gateway outage"


def selection(worker: TemporalWorker, **extra: object) -> dict[str, object]:
    return {"task_queue": worker.task_queue, "min_activity_attempts": 2, "reason": REASON, **extra}


def test_check_mode_lists_only_the_stuck_workflow(temporal_server, worker, reset_playbook):
    """Check mode plans a reset of the stuck workflow only, with why, and resets nothing."""
    stuck, stuck_run, healthy, healthy_run = stuck_and_healthy(temporal_server, worker)

    run = reset_playbook(selection(worker), check=True)

    assert run.rc == 0, run.stdout + run.stderr
    plan = run.stats["plan"]
    assert plan[1:] == [
        f"reset default/{stuck} run {stuck_run} to LastWorkflowTask (event 4): "
        "activity charge attempt >= 2, last failure: payment gateway unavailable"
    ]
    assert f'TaskQueue = "{worker.task_queue}"' in plan[0]
    [entry] = run.stats["result"]["workflows"]
    assert (entry["workflow_id"], entry["status"], entry["new_run_id"]) == (stuck, "would_reset", "")
    assert entry["activity_attempt"] >= 2
    assert entry["age_seconds"] >= 0
    assert temporal_server.describe(stuck)["run_id"] == stuck_run
    assert temporal_server.describe(healthy)["run_id"] == healthy_run


def test_plan_is_stable_while_the_workflow_stays_stuck(temporal_server, worker, reset_playbook):
    """Two check runs, attempts apart, give the same plan (it is hashed and compared before the real run)."""
    stuck, _, _, _ = stuck_and_healthy(temporal_server, worker)

    first = reset_playbook(selection(worker), check=True)
    attempts = first.stats["result"]["workflows"][0]["activity_attempt"]
    wait_for(lambda: max(temporal_server.describe(stuck)["activity_attempts"]) > attempts + 2, what="more attempts")
    second = reset_playbook(selection(worker), check=True)

    assert first.rc == second.rc == 0
    assert first.stats["plan"] == second.stats["plan"]
    assert second.stats["result"]["workflows"][0]["activity_attempt"] > attempts


def test_reset_starts_a_new_run_that_completes_once_fixed(temporal_server, worker, reset_playbook):
    """A real run resets the stuck workflow, whose new run completes after the fix; healthy ones stay."""
    stuck, stuck_run, healthy, healthy_run = stuck_and_healthy(temporal_server, worker)

    run = reset_playbook(selection(worker))

    assert run.rc == 0, run.stdout + run.stderr
    [entry] = run.stats["result"]["workflows"]
    new_run = entry["new_run_id"]
    assert (entry["status"], entry["run_id"], entry["reset_event_id"]) == ("reset", stuck_run, 4)
    assert new_run and new_run != stuck_run
    assert run.stats["summary"] == [f"default/{stuck}: reset {stuck_run} -> {new_run} at event 4 (LastWorkflowTask)"]
    assert "plan" not in run.stats
    assert temporal_server.describe(stuck)["run_id"] == new_run
    assert temporal_server.describe(stuck, stuck_run)["status"] == WorkflowExecutionStatus.TERMINATED
    worker.fix("gateway")
    assert temporal_server.result(stuck, new_run) == "charged gateway"
    after = temporal_server.describe(healthy)
    assert (after["run_id"], after["status"]) == (healthy_run, WorkflowExecutionStatus.RUNNING)
    temporal_server.signal(healthy, "finish")
    assert temporal_server.result(healthy, healthy_run) == "approved ok"


def test_workflow_id_resets_that_workflow_to_its_first_workflow_task(temporal_server, worker, reset_playbook):
    """Naming one workflow resets it (FirstWorkflowTask) and nothing else on the queue."""
    stuck, stuck_run, healthy, healthy_run = stuck_and_healthy(temporal_server, worker)
    other = wid("charge")
    other_run = temporal_server.start("ChargeOrder", "gateway", other, worker.task_queue)
    temporal_server.wait_stuck(other, attempts=2)

    run = reset_playbook({"workflow_id": stuck, "reset_type": "FirstWorkflowTask", "reason": REASON})

    assert run.rc == 0, run.stdout + run.stderr
    [entry] = run.stats["result"]["workflows"]
    assert (entry["workflow_id"], entry["run_id"], entry["status"]) == (stuck, stuck_run, "reset")
    assert entry["reset_event_id"] == 4
    assert temporal_server.describe(stuck)["run_id"] == entry["new_run_id"]
    assert temporal_server.describe(other)["run_id"] == other_run
    assert temporal_server.describe(healthy)["run_id"] == healthy_run


def test_failing_workflow_task_counts_as_stuck(temporal_server, worker, reset_playbook):
    """A workflow whose workflow task keeps failing is listed with the workflow task failure."""
    broken = wid("decider")
    broken_run = temporal_server.start("BrokenDecider", "decider", broken, worker.task_queue)
    temporal_server.wait_stuck(broken, attempts=99)
    temporal_server.wait_visible(worker.task_queue, {broken})

    run = reset_playbook(selection(worker), check=True)

    assert run.rc == 0, run.stdout + run.stderr
    [line] = run.stats["plan"][1:]
    assert line.startswith(f"reset default/{broken} run {broken_run} to LastWorkflowTask (event ")
    assert line.endswith("workflow task failing, last failure: decider bug: cannot parse order")


def test_more_than_max_workflows_is_refused_and_nothing_is_reset(temporal_server, worker, reset_playbook):
    """Three stuck workflows with max_workflows=2: the run fails, naming the cap, and no run changes."""
    ids = {wid("charge"): "" for _ in range(3)}
    for workflow_id in ids:
        ids[workflow_id] = temporal_server.start("ChargeOrder", "gateway", workflow_id, worker.task_queue)
    for workflow_id in ids:
        temporal_server.wait_stuck(workflow_id, attempts=2)
    temporal_server.wait_visible(worker.task_queue, set(ids))

    run = reset_playbook(selection(worker, max_workflows=2))

    assert run.rc != 0
    assert any("3 workflows would be reset, more than max_workflows=2" in m for m in run.messages), run.messages
    assert "refusing to reset any" in run.stats["summary"][0]
    assert {w: temporal_server.describe(w)["run_id"] for w in ids} == ids


def test_unknown_workflow_id_fails_clearly(temporal_server, reset_playbook):
    """An unknown workflow id fails the run with a message naming the id and the namespace."""
    run = reset_playbook({"workflow_id": "no-such-workflow", "reason": REASON}, check=True)

    assert run.rc != 0
    assert any("workflow 'no-such-workflow' not found in namespace 'default'" in m for m in run.messages), run.messages


def test_bad_visibility_query_fails_clearly(temporal_server, reset_playbook):
    """A visibility query the server cannot parse fails the run with the server's reason."""
    run = reset_playbook({"visibility_query": "WorkflowType = ", "reason": REASON}, check=True)

    assert run.rc != 0
    assert any(f"Temporal at {temporal_server.address}: INVALID_ARGUMENT" in m for m in run.messages), run.messages


def test_unreachable_server_fails_clearly(reset_playbook):
    """A server nobody listens on fails the run at once with a connect error naming the address."""
    address = f"127.0.0.1:{free_port()}"
    run = reset_playbook({"temporal_address": address, "task_queue": "q", "reason": REASON}, check=True)

    assert run.rc != 0
    assert any(f"cannot connect to Temporal at {address}" in m for m in run.messages), run.messages
    assert run.stats["summary"] == [m for m in run.messages if address in m]


@pytest.fixture
def silent_listener():
    """A TCP port that accepts connections (kernel backlog) but never speaks: a hung server or wrong LB port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def test_server_that_never_answers_fails_within_the_rpc_timeout(silent_listener, reset_playbook):
    """A peer that accepts TCP but never answers fails the run after temporal_rpc_timeout, not a hang."""
    extra = {"temporal_address": silent_listener, "temporal_rpc_timeout": 2, "task_queue": "q", "reason": REASON}

    run = reset_playbook(extra, check=True)

    assert run.rc != 0
    assert any(f"cannot connect to Temporal at {silent_listener}: no answer within 2 s" in m for m in run.messages)


@pytest.mark.parametrize("peer", ["silent", "closed"])
def test_module_runs_leave_nothing_in_the_temp_directory(peer, silent_listener, tmp_path):
    """Each module run removes its AnsiballZ payload dir, also when it ends early (no answer, or refused)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    address = silent_listener if peer == "silent" else f"127.0.0.1:{free_port()}"
    extra = {"temporal_address": address, "temporal_rpc_timeout": 2, "task_queue": "q", "reason": REASON}

    run = run_playbook(address, extra, check=True, env={"TMPDIR": str(tmp)})

    assert run.rc != 0 and any("Temporal at" in m for m in run.messages), run.stdout[-2000:]
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith("ansible_")) == []


def test_api_key_never_appears_in_output(temporal_server, worker, reset_playbook):
    """TEMPORAL_API_KEY is sent to the server but is not in the playbook output, even at -vvv."""
    canary = "canary-" + uuid.uuid4().hex
    env = {"TEMPORAL_API_KEY": canary, "ANSIBLE_VERBOSITY": "3"}
    run = reset_playbook(selection(worker, temporal_tls=False), check=True, env=env)

    assert run.rc == 0, run.stdout + run.stderr
    assert '"api_key": "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"' in run.stdout  # it did reach the module
    assert canary not in run.stdout + run.stderr


def test_workflow_id_and_a_selection_together_are_refused(temporal_server, reset_playbook):
    """workflow_id with task_queue is ambiguous: the run fails naming both, before touching Temporal."""
    run = reset_playbook({"workflow_id": "w", "task_queue": "q", "reason": REASON}, check=True)

    assert run.rc != 0
    assert any("mutually exclusive: workflow_id|task_queue" in m for m in run.messages), run.messages


def test_missing_reason_is_rejected_by_the_argument_spec(temporal_server, reset_playbook):
    """Without reason the first task (validate_argument_spec) fails and names it."""
    run = reset_playbook({"task_queue": "q"}, check=True)

    assert run.rc != 0
    assert any("reason" in m and "missing" in m for m in run.messages), run.messages


def test_reason_is_recorded_in_temporal_verbatim(temporal_server, worker, reset_playbook):
    """The reason reaches Temporal's reset event as typed (punctuation the front matter allows included)."""
    stuck, _, _, _ = stuck_and_healthy(temporal_server, worker)
    reason = "INC-42 (gateway) down: retry #2, see ops/runbook?x=1 & 'y' @sre!"

    run = reset_playbook({"workflow_id": stuck, "reason": reason})

    assert run.rc == 0, run.stdout + run.stderr
    new_run = run.stats["result"]["workflows"][0]["new_run_id"]
    assert temporal_server.reset_reason(stuck, new_run) == reason
    assert run.stats["result"]["reason"] == reason


def test_a_jinja_looking_reason_is_refused_as_text_by_a_direct_run(temporal_server, worker, reset_playbook):
    """A direct run checks the front matter's pattern too: `{{ 7 * 7 }}` is refused, shown as typed
    (never evaluated to 49), and nothing is reset."""
    stuck, _, _, _ = stuck_and_healthy(temporal_server, worker)

    run = reset_playbook({"workflow_id": stuck, "reason": "INC-42 {{ 7 * 7 }} gateway down"})

    assert run.rc != 0
    (refusal,) = [m for m in run.messages if "reason must match" in m]
    assert "{{ 7 * 7 }}" in refusal and "49" not in refusal, refusal
    assert run.stats == {}, run.stats  # refused before the task that resets (and reports) ran


def test_runbook_parameters_drive_the_playbook(temporal_server, worker, reset_playbook):
    """Parameters typed as text and validated against the runbook front matter run the playbook as is."""
    from bot.catalog_files import load_runbook
    from bot.domain.params import lock_key, validate_params

    runbook = load_runbook(ROOT / "runbooks" / "reset-stuck-workflows.md", ROOT / "playbooks")
    stuck, stuck_run, _, _ = stuck_and_healthy(temporal_server, worker)
    values = validate_params(
        runbook, {"task_queue": worker.task_queue, "min_activity_attempts": "2", "reason": "INC-42 outage"}
    )

    run = reset_playbook(values, check=True)

    assert run.rc == 0, run.stdout + run.stderr
    assert lock_key(runbook, values) == "temporal/default"
    assert [line.split(" to ")[0] for line in run.stats["plan"][1:]] == [f"reset default/{stuck} run {stuck_run}"]


def test_one_failed_reset_does_not_hide_the_others(temporal_server, worker, reset_playbook):
    """A reset the server refuses is reported per workflow; the next one is still reset; the run fails."""
    refused, plain = f"a-{wid('receipt')}", f"b-{wid('charge')}"
    refused_run = temporal_server.start("ChargeWithReceipt", "gateway", refused, worker.task_queue)
    plain_run = temporal_server.start("ChargeOrder", "gateway", plain, worker.task_queue)
    for workflow_id in (refused, plain):
        temporal_server.wait_stuck(workflow_id, attempts=2)
    temporal_server.wait_visible(worker.task_queue, {refused, plain, f"{refused}-receipt"})

    run = reset_playbook(selection(worker))

    assert run.rc != 0
    first, second = run.stats["result"]["workflows"]
    assert (first["workflow_id"], first["status"], first["new_run_id"]) == (refused, "failed", "")
    assert "pending child" in first["error"]
    assert (second["workflow_id"], second["status"]) == (plain, "reset")
    assert run.stats["result"]["failed_count"] == 1
    assert run.stats["summary"][0].startswith(f"default/{refused}: reset of {refused_run} FAILED: ")
    assert run.stats["summary"][1].startswith(f"default/{plain}: reset {plain_run} -> ")
    assert any(m.startswith("1 of 2 resets failed") for m in run.messages), run.messages
    assert temporal_server.describe(refused)["run_id"] == refused_run
    assert temporal_server.describe(plain)["run_id"] == second["new_run_id"]


def test_no_history_progress_for_stuck_minutes_counts_as_stuck(temporal_server, worker, reset_playbook):
    """With stuck_minutes=1 a workflow idle for over a minute is listed, a fresh one is not (waits 1 min)."""
    idle = wid("approval")
    idle_run = temporal_server.start("WaitForApproval", "ok", idle, worker.task_queue)
    wait_for(lambda: temporal_server.idle_seconds(idle) > 61, what="a minute without history events", timeout=120)
    fresh = wid("approval")
    temporal_server.start("WaitForApproval", "ok", fresh, worker.task_queue)
    temporal_server.wait_visible(worker.task_queue, {idle, fresh})

    run = reset_playbook(
        selection(worker, min_activity_attempts=0, failing_workflow_task=False, stuck_minutes=1), check=True
    )

    assert run.rc == 0, run.stdout + run.stderr
    assert "stuck = no history event for >= 1m;" in run.stats["plan"][0]
    assert run.stats["plan"][1:] == [
        f"reset default/{idle} run {idle_run} to LastWorkflowTask (event 10): no history event for >= 1m"
    ]
    assert run.stats["result"]["workflows"][0]["idle_seconds"] >= 60


def test_reset_stuck_workflows_error_names_visibility_query() -> None:
    """Without a selection, the error names the runbook's parameter visibility_query (not the module's `query`)."""
    run = run_playbook("127.0.0.1:1", {"reason": "INC-1"}, check=True)
    assert run.rc != 0
    text = " ".join(run.messages)
    assert "workflow_id, task_queue, visibility_query" in text, run.messages
