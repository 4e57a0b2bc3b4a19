"""RunService's decisions over the in-memory ports (bot.testing): quorum, expiry, plan and approval checks,
cancel, outcome recording and locks, without PostgreSQL or ansible-playbook."""

from __future__ import annotations

import pytest

from bot import testing
from bot.domain.runs import RunEvent, RunState
from bot.errors import AlreadyDecided, LockHeld, NotAnApprover, RequestExpired, RunFinished, SelfApproval, StorageError
from bot.execution import processes as procs
from bot.execution.runner import Job, StopCheck
from bot.execution.runner import Outcome as RunnerOutcome
from tests.unit.service.conftest import Spine

# ----------------------------------------------------------------------------- quorum


def test_two_distinct_approvers_queue_a_two_person_run(spine: Spine) -> None:
    """A quorum-2 run stays pending after one approval and is queued by a second, different approver."""
    res = spine.service.request("quorum", {"target": "api"}, spine.op("alice"))
    assert res.approvals_needed == 2 and res.run.state is RunState.PENDING_APPROVAL
    after_one = spine.service.approve(res.run.id, spine.op("bob"))
    assert after_one.state is RunState.PENDING_APPROVAL and after_one.approvers == ["bob"]
    after_two = spine.service.approve(res.run.id, spine.op("carol"))
    assert after_two.state is RunState.QUEUED and after_two.approvers == ["bob", "carol"]
    assert spine.told.events(res.run.id) == [RunEvent.REQUESTED, RunEvent.APPROVED, RunEvent.QUEUED]
    assert spine.store.actions(res.run.id) == ["requested", "approved", "approved", "queued"]


def test_the_same_approver_twice_counts_once(spine: Spine) -> None:
    """A second approval by the same person is refused and the run keeps waiting."""
    res = spine.service.request("quorum", {"target": "api"}, spine.op("alice"))
    spine.service.approve(res.run.id, spine.op("bob"))
    with pytest.raises(AlreadyDecided):
        spine.service.approve(res.run.id, spine.op("bob"))
    assert spine.service.get(res.run.id).state is RunState.PENDING_APPROVAL
    assert spine.store.actions(res.run.id) == ["requested", "approved"]


def test_self_approval_is_refused_and_changes_nothing(spine: Spine) -> None:
    """The requester cannot approve their own run; no approval or audit event is written."""
    res = spine.service.request("echo", {"target": "api"}, spine.op("alice"))
    with pytest.raises(SelfApproval):
        spine.service.approve(res.run.id, spine.op("alice"))
    run = spine.service.get(res.run.id)
    assert run.state is RunState.PENDING_APPROVAL and run.approvals == ()
    assert spine.store.actions(res.run.id) == ["requested"]


def test_someone_outside_the_approver_groups_cannot_approve(spine: Spine) -> None:
    """An operator in no approver group is refused."""
    res = spine.service.request("echo", {"target": "api"}, spine.op("alice"))
    with pytest.raises(NotAnApprover):
        spine.service.approve(res.run.id, spine.op("dave"))
    assert spine.service.get(res.run.id).state is RunState.PENDING_APPROVAL


def test_deny_ends_the_request(spine: Spine) -> None:
    """A denial makes the run denied, frees its lock and runs nothing."""
    res = spine.service.request("echo", {"target": "api"}, spine.op("alice"))
    denied = spine.service.deny(res.run.id, spine.op("bob"), "not now")
    assert denied.state is RunState.DENIED
    assert spine.execute() is None and spine.runner.real_jobs == []
    spine.service.request("echo", {"target": "api"}, spine.op("alice"))  # the lock is free again


# ----------------------------------------------------------------------------- expiry


def test_an_approval_after_the_ttl_expires_the_run(spine: Spine) -> None:
    """Approving once the approval window closed expires the run instead, and says so."""
    res = spine.service.request("echo", {"target": "api"}, spine.op("alice"))
    spine.clock.advance(3601)
    with pytest.raises(RequestExpired, match="request it again"):
        spine.service.approve(res.run.id, spine.op("bob"))
    assert spine.service.get(res.run.id).state is RunState.EXPIRED
    assert spine.store.actions(res.run.id) == ["requested", "expired"]
    assert spine.told.events(res.run.id)[-1] is RunEvent.EXPIRED


def test_an_approval_inside_the_ttl_counts(spine: Spine) -> None:
    """One second before the window closes, the approval still queues the run."""
    res = spine.service.request("echo", {"target": "api"}, spine.op("alice"))
    spine.clock.advance(3599)
    assert spine.service.approve(res.run.id, spine.op("bob")).state is RunState.QUEUED


def test_the_sweeper_expires_overdue_requests_only(spine: Spine) -> None:
    """expire_overdue ends pending runs past their ttl and leaves younger ones waiting."""
    old = spine.service.request("echo", {"target": "old"}, spine.op("alice"))
    spine.clock.advance(1800)
    young = spine.service.request("echo", {"target": "young"}, spine.op("alice"))
    spine.clock.advance(1801)
    assert [r.id for r in spine.service.expire_overdue()] == [old.run.id]
    assert spine.service.get(young.run.id).state is RunState.PENDING_APPROVAL


# ----------------------------------------------------------------------------- plan and approval gate


def test_a_run_whose_check_mode_plan_changed_since_approval_is_refused(spine: Spine) -> None:
    """The worker recomputes the plan; a different check-mode output refuses the run before it runs."""
    spine.runner.check(testing.succeeded(stats={"plan": ["would restart api-1"]}),
                       testing.succeeded(stats={"plan": ["would restart api-2"]}))
    res = spine.service.request("planned", {"target": "api"}, spine.op("alice"))
    assert res.plan.check_output == ["would restart api-1"]
    spine.service.approve(res.run.id, spine.op("bob"))
    done = spine.execute()
    assert done.state is RunState.FAILED
    assert done.error.startswith("refused: the plan changed since approval (check-mode output"), done.error
    assert spine.runner.real_jobs == []
    assert spine.store.events_for(res.run.id)[-1].body["refused"] == "plan_mismatch"


def test_an_unchanged_plan_runs(spine: Spine) -> None:
    """The same check-mode output at execution lets the approved run through."""
    spine.runner.check(testing.succeeded(stats={"plan": ["would restart api-1"]}),
                       testing.succeeded(stats={"plan": ["would restart api-1"]}))
    res = spine.service.request("planned", {"target": "api"}, spine.op("alice"))
    spine.service.approve(res.run.id, spine.op("bob"))
    assert spine.execute().state is RunState.SUCCEEDED
    assert [j.check for j in spine.runner.jobs] == [True, True, False]


def test_a_run_queued_behind_the_services_back_is_refused(spine: Spine) -> None:
    """A pending run whose row was set to queued (no approval in the trail) is refused and never runs."""
    res = spine.service.request("echo", {"target": "api"}, spine.op("alice"))
    spine.store.tamper(res.run.id, state=RunState.QUEUED)
    done = spine.execute()
    assert done.state is RunState.FAILED
    assert done.error.startswith("refused: not approved: needs 1 approval(s)"), done.error
    assert spine.runner.jobs == []
    assert spine.store.events_for(res.run.id)[-1].body["refused"] == "not_approved"


def test_a_lowered_approval_count_in_the_row_is_refused(spine: Spine) -> None:
    """approvals_required edited down in the row does not lower the runbook's two-person rule."""
    res = spine.service.request("quorum", {"target": "api"}, spine.op("alice"))
    spine.service.approve(res.run.id, spine.op("bob"))
    spine.store.tamper(res.run.id, approvals_required=1, state=RunState.QUEUED)
    done = spine.execute()
    assert done.state is RunState.FAILED and "needs 2 approval(s)" in (done.error or "")


# ----------------------------------------------------------------------------- cancel


def test_cancel_a_pending_run(spine: Spine) -> None:
    """The requester cancels a pending run: cancelled by them, lock released."""
    res = spine.service.request("echo", {"target": "api"}, spine.op("alice"))
    run = spine.service.cancel(res.run.id, spine.op("alice"))
    assert run.state is RunState.CANCELLED and run.cancelled_by == "alice"
    assert spine.told.events(res.run.id)[-1] is RunEvent.CANCELLED
    spine.service.request("echo", {"target": "api"}, spine.op("alice"))


def test_cancel_a_queued_run_before_a_worker_takes_it(spine: Spine) -> None:
    """A queued run cancelled by an approver is never claimed."""
    res = spine.service.request("free", {"target": "api"}, spine.op("alice"))
    assert res.run.state is RunState.QUEUED
    spine.service.cancel(res.run.id, spine.op("alice"))
    assert spine.execute() is None and spine.runner.jobs == []


def test_cancel_a_running_run_stops_its_playbook(spine: Spine) -> None:
    """cancel on a running run asks its worker, which ends the playbook and records cancelled."""
    res = spine.service.request("free", {"target": "api"}, spine.op("alice"))

    def cancelled_midway(job: Job, should_stop: StopCheck) -> RunnerOutcome:
        asked = spine.service.cancel(res.run.id, spine.op("alice"))
        assert asked.state is RunState.RUNNING and asked.cancel_requested
        return testing.ScriptedRunner.stopped(should_stop)

    spine.runner.script(cancelled_midway)
    done = spine.execute()
    assert done.state is RunState.CANCELLED and done.cancelled_by == "alice"
    assert done.error == "cancelled while running; its processes were ended"
    assert spine.store.actions(res.run.id) == ["requested", "queued", "started", "cancel_requested", "cancelled"]
    assert spine.told.events(res.run.id) == [RunEvent.REQUESTED, RunEvent.STARTED, RunEvent.CANCEL_REQUESTED,
                                             RunEvent.CANCELLED]


def test_a_finished_run_cannot_be_cancelled(spine: Spine) -> None:
    """cancel of a final run says it already finished."""
    res = spine.service.request("free", {"target": "api"}, spine.op("alice"))
    spine.execute()
    with pytest.raises(RunFinished):
        spine.service.cancel(res.run.id, spine.op("alice"))


def test_worker_shutdown_interrupts_the_running_playbook(spine: Spine) -> None:
    """A worker stopping mid-run ends the playbook and records interrupted with its reason."""
    res = spine.service.request("free", {"target": "api"}, spine.op("alice"))
    tracker = testing.SyncTracker(spine.service)

    def shutdown_midway(job: Job, should_stop: StopCheck) -> RunnerOutcome:
        tracker.shutdown("SIGTERM")
        return testing.ScriptedRunner.stopped(should_stop)

    spine.runner.script(shutdown_midway)
    done = spine.service.execute_next("test", tracker)
    assert done is not None and done.id == res.run.id and done.state is RunState.INTERRUPTED
    assert done.error == "SIGTERM; the playbook was ended and not re-run"


# ----------------------------------------------------------------------------- outcomes


def test_a_successful_playbook_records_its_summary_and_result(spine: Spine) -> None:
    """set_stats summary and result reach the run row and the final audit event says succeeded."""
    spine.runner.script(testing.succeeded(stats={"summary": ["restarted api"], "result": {"pods": 3}}))
    res = spine.service.request("free", {"target": "api"}, spine.op("alice"))
    done = spine.execute()
    assert done.state is RunState.SUCCEEDED and done.summary == ["restarted api"] and done.result == {"pods": 3}
    assert done.error is None
    (job,) = spine.runner.real_jobs
    assert job.extravars["target"] == "api" and job.extravars["runbook_run_id"] == str(res.run.id)
    assert spine.store.events_for(res.run.id)[-1].body["outcome"] == "successful"
    assert spine.told.events(res.run.id)[-1] is RunEvent.SUCCEEDED


def test_a_failed_playbook_records_why(spine: Spine) -> None:
    """The first failure messages become the run's error."""
    spine.runner.script(testing.failed("disk full on api-1"))
    spine.service.request("free", {"target": "api"}, spine.op("alice"))
    done = spine.execute()
    assert done.state is RunState.FAILED and done.error == "disk full on api-1"


def test_an_outcome_is_recorded_once_the_database_comes_back(spine: Spine) -> None:
    """The store is down as the playbook ends: the worker backs off and records the outcome, marked late."""
    res = spine.service.request("free", {"target": "api"}, spine.op("alice"))

    def db_gone(job: Job, should_stop: StopCheck) -> RunnerOutcome:
        spine.store.fail_next(3)
        return testing.succeeded(stats={"summary": ["done"]})

    spine.runner.script(db_gone)
    done = spine.execute()
    assert done.state is RunState.SUCCEEDED and done.summary == ["done"]
    body = spine.store.events_for(res.run.id)[-1].body
    assert body["recorded_late"] is True and body["outcome"] == "successful"
    assert spine.clock.slept, "it waited (on the clock) before retrying"
    assert spine.service.spool is not None and spine.service.spool.pending() == []


def test_an_outcome_kept_through_a_shutdown_is_recorded_by_the_next_sweep(spine: Spine) -> None:
    """Down at the end and told to shut down: the outcome stays in the spool, and record_spooled writes it."""
    res = spine.service.request("free", {"target": "api"}, spine.op("alice"))
    tracker = testing.SyncTracker(spine.service)

    def db_gone(job: Job, should_stop: StopCheck) -> RunnerOutcome:
        spine.store.go_down()
        tracker.shutdown("SIGTERM")
        return testing.succeeded()

    spine.runner.script(db_gone)
    with pytest.raises(StorageError, match="kept for the next worker"):
        spine.service.execute_next("test", tracker)
    assert spine.service.spool is not None and spine.service.spool.pending() == [res.run.id]
    spine.store.come_back()
    assert [r.state for r in spine.service.record_spooled()] == [RunState.SUCCEEDED]
    assert spine.service.spool.pending() == []


# ----------------------------------------------------------------------------- locks


def test_a_held_lock_refuses_a_second_request_naming_the_holder(spine: Spine) -> None:
    """Two requests for the same target: the second is refused with the holder's id; nothing is written."""
    first = spine.service.request("echo", {"target": "api"}, spine.op("alice"))
    before = len(spine.store.events)
    with pytest.raises(LockHeld) as e:
        spine.service.request("echo", {"target": "api"}, spine.op("bob"))
    assert e.value.holder == first.run.id and e.value.lock_key == "echo/api"
    assert len(spine.store.events) == before
    spine.service.request("echo", {"target": "web"}, spine.op("bob"))  # another target: its own lock


def test_the_lock_is_released_when_the_run_finishes(spine: Spine) -> None:
    """After the holder finished, the same target can be requested again."""
    spine.service.request("free", {"target": "api"}, spine.op("alice"))
    spine.execute()
    assert spine.service.request("free", {"target": "api"}, spine.op("alice")).run.state is RunState.QUEUED


# ----------------------------------------------------------------------------- stale runs


def _claimed_by(spine: Spine, host: str) -> int:
    """A run claimed by a worker process that no longer exists (pid 0 never is a worker)."""
    res = spine.service.request("free", {"target": "api"}, spine.op("alice"))
    with spine.store.transaction() as tx:
        tx.claim_next("gone/0", host=host, processes={"boot_id": procs.boot_id(), "owner": {"pid": 0, "start": 0}})
    return res.run.id


def test_a_run_whose_worker_died_is_interrupted_and_not_rerun(spine: Spine) -> None:
    """No heartbeat past the limit, owner gone on this host: interrupted, its files discarded, never re-run."""
    run_id = _claimed_by(spine, procs.host_name())
    assert spine.service.recover_stale(30) == []  # its heartbeat is still fresh
    spine.clock.advance(31)
    (done,) = spine.service.recover_stale(30)
    assert done.id == run_id and done.state is RunState.INTERRUPTED
    assert done.error is not None and "it was not re-run" in done.error
    assert [ident for ident, _ in spine.runner.discarded] == [str(run_id)]
    assert spine.runner.jobs == [] and spine.execute() is None


def test_a_stale_run_of_another_host_stays_running_with_a_note(spine: Spine) -> None:
    """Only the owning host can end a run's processes: elsewhere it stays running, lock held, saying why."""
    run_id = _claimed_by(spine, "elsewhere")
    spine.clock.advance(31)
    assert spine.service.recover_stale(30) == []
    run = spine.service.get(run_id)
    assert run.state is RunState.RUNNING and run.error is not None and "owner host elsewhere" in run.error
