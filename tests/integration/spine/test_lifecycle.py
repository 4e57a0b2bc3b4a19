"""The request -> approve -> worker -> result path, through the real service, Postgres and ansible-runner."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.domain.runs import Run, RunState
from bot.errors import (
    AlreadyDecided,
    LockHeld,
    NotAllowedToRequest,
    NotAnApprover,
    ParameterError,
    RequestExpired,
    RunFinished,
    RunStateError,
    SelfApproval,
    UnknownOperator,
    UnknownRunbook,
)
from bot.spine import Spine
from bot.storage import audit
from tests.support.spine import drain, op, ran
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

INERT = ["; rm -rf /", "$(id)", "`id`", "{{ lookup('pipe','id') }}", "{% raw %}x", "a' OR '1'='1", "${HOME}"]



def _audit_count(ctx: Spine) -> int:
    with ctx.db.transaction() as conn:
        row = conn.execute("SELECT count(*) AS n FROM audit_events").fetchone()
    assert row is not None
    return int(row["n"])


def test_approved_run_executes_once_and_records_result(ctx: Spine, spine_env: dict[str, str]) -> None:
    """A run approved by another SRE is executed exactly once and its summary and result are stored."""
    res = ctx.service.request("echo", {"target": "api", "message": "hi"}, op(ctx, "alice"), reason="test")
    assert res.run.state is RunState.PENDING_APPROVAL
    run = ctx.service.approve(res.run.id, op(ctx, "bob"))
    assert run.state is RunState.QUEUED
    drain(ctx)
    drain(ctx)
    done = ctx.service.get(res.run.id)
    assert done.state is RunState.SUCCEEDED
    assert done.result["echo"] == "hi"
    assert done.summary == ["echoed 2 characters to api"]
    assert ran(spine_env) == [f"ran echo {res.run.id}"]
    with ctx.db.transaction() as conn:
        actions = [e.action for e in audit.events_for_run(conn, res.run.id)]
    assert actions == ["requested", "approved", "queued", "started", "succeeded"]


@pytest.mark.parametrize("value", INERT)
def test_hostile_values_reach_the_playbook_as_inert_data(ctx: Spine, value: str) -> None:
    """Shell and Jinja syntax in a parameter is passed through unchanged and never evaluated."""
    res = ctx.service.request("selfok", {"target": "x", "message": value}, op(ctx, "alice"))
    ctx.service.approve(res.run.id, op(ctx, "alice"))
    drain(ctx)
    done = ctx.service.get(res.run.id)
    assert done.state is RunState.SUCCEEDED, done.error
    assert done.result["echo"] == value


@pytest.mark.parametrize("value", ["line1\nline2", "abc\u202egnp.exe", "tab\there", "nul\x00"])
def test_control_and_bidi_characters_are_refused_and_nothing_is_stored(ctx: Spine, value: str) -> None:
    """Newlines, right-to-left overrides and other controls are refused before anything is recorded."""
    with pytest.raises(ParameterError):
        ctx.service.request("echo", {"target": "api", "message": value}, op(ctx, "alice"))
    assert ctx.service.runs() == []
    assert _audit_count(ctx) == 0


@pytest.mark.parametrize(("raw", "fragment"), [
    ({"target": "api", "colour": "red"}, "unknown parameter colour"),
    ({}, "missing required parameter target"),
    ({"target": "api", "count": "three"}, "expected a whole number"),
    ({"target": "api", "count": "9"}, "above the maximum 5"),
    ({"target": "API!"}, "does not match the pattern"),
    ({"target": "api", "mode": "warp"}, "must be one of fast, slow"),
    ({"target": "api", "loud": "maybe"}, "expected true or false"),
])
def test_bad_parameters_are_refused_with_a_clear_error(ctx: Spine, raw: dict[str, str], fragment: str) -> None:
    """Each kind of bad parameter gets one line naming the problem, and no run is created."""
    with pytest.raises(ParameterError, match=fragment):
        ctx.service.request("echo", raw, op(ctx, "alice"))
    assert ctx.service.runs() == []


def test_unknown_runbook_names_the_known_ones(ctx: Spine) -> None:
    """An unknown runbook name is refused and the error lists what exists."""
    with pytest.raises(UnknownRunbook, match="Known runbooks: echo, hasty"):
        ctx.service.request("nope", {}, op(ctx, "alice"))


def test_unknown_operator_is_refused(ctx: Spine) -> None:
    """An identity missing from the operators file cannot act."""
    with pytest.raises(UnknownOperator, match="not an operator"):
        ctx.service.directory.operator("mallory")


def test_requesters_restriction(ctx: Spine) -> None:
    """A runbook restricted to DBAs refuses an SRE's request and accepts a DBA's."""
    with pytest.raises(NotAllowedToRequest):
        ctx.service.request("restricted", {"target": "x"}, op(ctx, "alice"))
    assert ctx.service.request("restricted", {"target": "x"}, op(ctx, "dave")).run.state is RunState.PENDING_APPROVAL


def test_self_approval_is_refused_and_changes_nothing(ctx: Spine) -> None:
    """The requester cannot approve their own request unless the runbook allows it."""
    res = ctx.service.request("echo", {"target": "api"}, op(ctx, "alice"))
    before = _audit_count(ctx)
    with pytest.raises(SelfApproval):
        ctx.service.approve(res.run.id, op(ctx, "alice"))
    assert ctx.service.get(res.run.id).state is RunState.PENDING_APPROVAL
    assert ctx.service.get(res.run.id).approvals == ()
    assert _audit_count(ctx) == before


def test_self_approval_allowed_when_the_runbook_says_so(ctx: Spine) -> None:
    """allow_self: true lets the requester's approval count."""
    res = ctx.service.request("selfok", {"target": "x"}, op(ctx, "alice"))
    assert ctx.service.approve(res.run.id, op(ctx, "alice")).state is RunState.QUEUED


def test_non_approver_is_refused(ctx: Spine) -> None:
    """Someone outside the approver groups cannot approve."""
    res = ctx.service.request("echo", {"target": "api"}, op(ctx, "alice"))
    with pytest.raises(NotAnApprover, match="approvers are group:sre"):
        ctx.service.approve(res.run.id, op(ctx, "eve"))
    assert ctx.service.get(res.run.id).state is RunState.PENDING_APPROVAL


def test_approving_twice(ctx: Spine) -> None:
    """The same approver approving twice does not count twice; approving a queued run is refused."""
    res = ctx.service.request("quorum", {"target": "a"}, op(ctx, "alice"))
    ctx.service.approve(res.run.id, op(ctx, "bob"))
    with pytest.raises(AlreadyDecided):
        ctx.service.approve(res.run.id, op(ctx, "bob"))
    assert ctx.service.get(res.run.id).state is RunState.PENDING_APPROVAL
    ctx.service.approve(res.run.id, op(ctx, "carol"))
    with pytest.raises(RunStateError, match="is queued, not waiting for approval"):
        ctx.service.approve(res.run.id, op(ctx, "bob"))


def test_deny_ends_the_request_and_it_never_runs(ctx: Spine, spine_env: dict[str, str]) -> None:
    """One deny ends the request as denied; the worker never runs it."""
    res = ctx.service.request("quorum", {"target": "a"}, op(ctx, "alice"))
    ctx.service.approve(res.run.id, op(ctx, "bob"))
    assert ctx.service.deny(res.run.id, op(ctx, "carol"), "not now").state is RunState.DENIED
    drain(ctx)
    assert ran(spine_env) == []


def _wait_until_overdue(run: Run) -> None:
    """Wait until the request's ttl has passed on the clock (its expiry time is behind us)."""
    expires_at = run.expires_at
    assert expires_at is not None
    wait_for(lambda: datetime.now(UTC) > expires_at, timeout=10, what=f"run {run.id}'s ttl to pass")


def test_expired_request_cannot_be_approved(ctx: Spine, spine_env: dict[str, str]) -> None:
    """After its ttl a request is recorded as expired (not denied) and never runs."""
    res = ctx.service.request("shortlived", {"target": "a"}, op(ctx, "alice"))
    _wait_until_overdue(res.run)
    with pytest.raises(RequestExpired, match="expired"):
        ctx.service.approve(res.run.id, op(ctx, "bob"))
    assert ctx.service.get(res.run.id).state is RunState.EXPIRED
    drain(ctx)
    assert ran(spine_env) == []


def test_expiry_sweep(ctx: Spine) -> None:
    """The housekeeping sweep expires overdue requests without anyone clicking."""
    res = ctx.service.request("shortlived", {"target": "a"}, op(ctx, "alice"))
    _wait_until_overdue(res.run)
    assert [r.id for r in ctx.service.expire_overdue()] == [res.run.id]
    assert ctx.service.get(res.run.id).state is RunState.EXPIRED


def test_lock_refuses_a_second_request_naming_the_holder(ctx: Spine) -> None:
    """A second request for the same lock key is refused with the holder's run id."""
    first = ctx.service.request("echo", {"target": "api"}, op(ctx, "alice"))
    with pytest.raises(LockHeld, match=f"held by run {first.run.id}"):
        ctx.service.request("echo", {"target": "api"}, op(ctx, "bob"))
    assert ctx.service.request("echo", {"target": "web"}, op(ctx, "bob")).run.lock_key == "echo/web"


def test_lock_is_released_by_a_final_state(ctx: Spine) -> None:
    """Once the holder ends (here: denied), the same target can be requested again."""
    first = ctx.service.request("echo", {"target": "api"}, op(ctx, "alice"))
    ctx.service.deny(first.run.id, op(ctx, "bob"))
    assert ctx.service.request("echo", {"target": "api"}, op(ctx, "alice")).run.state is RunState.PENDING_APPROVAL


def test_cancel_pending_and_cancel_finished(ctx: Spine) -> None:
    """A pending run can be cancelled by its requester; cancelling a finished run is refused."""
    res = ctx.service.request("echo", {"target": "api"}, op(ctx, "alice"))
    assert ctx.service.cancel(res.run.id, op(ctx, "alice")).state is RunState.CANCELLED
    with pytest.raises(RunFinished, match="already finished"):
        ctx.service.cancel(res.run.id, op(ctx, "alice"))


def test_plan_change_after_approval_refuses_the_run(ctx: Spine, spine_env: dict[str, str]) -> None:
    """When the check-mode output differs at run time, the run is refused and says why."""
    from pathlib import Path

    res = ctx.service.request("planned", {"value": "new"}, op(ctx, "alice"))
    assert res.plan.check_output == ["target old -> new"]
    ctx.service.approve(res.run.id, op(ctx, "bob"))
    Path(spine_env["SPINE_TEST_TARGET"]).write_text("changed-behind-our-back\n")
    drain(ctx)
    done = ctx.service.get(res.run.id)
    assert done.state is RunState.FAILED
    assert done.error is not None and "plan changed since approval (check-mode output" in done.error
    assert Path(spine_env["SPINE_TEST_TARGET"]).read_text() == "changed-behind-our-back\n"


def test_unchanged_plan_runs(ctx: Spine, spine_env: dict[str, str]) -> None:
    """With the target as approved, the checked plan matches and the change is applied."""
    from pathlib import Path

    res = ctx.service.request("planned", {"value": "new"}, op(ctx, "alice"))
    ctx.service.approve(res.run.id, op(ctx, "bob"))
    drain(ctx)
    assert ctx.service.get(res.run.id).state is RunState.SUCCEEDED
    assert Path(spine_env["SPINE_TEST_TARGET"]).read_text() == "new\n"


def test_job_timeout_gives_timed_out(ctx: Spine) -> None:
    """A playbook running past the runbook's timeout is stopped and recorded as timed_out."""
    res = ctx.service.request("hasty", {"seconds": "60"}, op(ctx, "alice"))
    drain(ctx)
    done = ctx.service.get(res.run.id)
    assert done.state is RunState.TIMED_OUT
    assert done.duration_seconds is not None and done.duration_seconds < 50
