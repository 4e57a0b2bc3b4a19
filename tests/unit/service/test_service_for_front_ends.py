"""What the Slack notifier, the scheduler and the worker pool ask of RunService instead of the database."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from bot.domain.runs import RunState
from bot.scheduler import fire_scheduled
from tests.unit.service.conftest import Spine

FIRE = datetime(2026, 1, 1, 4, 0, tzinfo=UTC)


def test_a_notify_claim_is_granted_once(spine: Spine) -> None:
    """The first claimant of a run's card gets the run; later claimants (other replicas) get None."""
    res = spine.service.request("echo", {"target": "api"}, spine.op("alice"))
    assert spine.service.claim_notify(res.run.id, "card_claim", "card", claimant="one") is not None
    assert spine.service.claim_notify(res.run.id, "card_claim", "card", claimant="two") is None
    spine.service.set_notify(res.run.id, {"card": {"channel": "C1", "ts": "1.2"}, "card_claim": None})
    assert spine.service.get(res.run.id).notify == {"card_claim": None, "card": {"channel": "C1", "ts": "1.2"}}
    assert spine.service.claim_notify(res.run.id, "card_claim", "card", claimant="three") is None


def test_a_scheduled_fire_becomes_one_preapproved_run(spine: Spine) -> None:
    """The same fire time twice (two replicas) requests one queued run, linked to the fire."""
    ctx = SimpleNamespace(service=spine.service)
    run_id = fire_scheduled(ctx, "nightly", FIRE)  # type: ignore[arg-type]
    assert run_id is not None and spine.service.get(run_id).state is RunState.QUEUED
    assert fire_scheduled(ctx, "nightly", FIRE) is None  # type: ignore[arg-type]
    assert spine.store.schedule_fires() == {("runbook:nightly", FIRE): run_id}


def test_a_refused_scheduled_fire_is_audited(spine: Spine) -> None:
    """A fire the service refuses (an unknown runbook) leaves a `schedule_refused` event and no run."""
    assert fire_scheduled(SimpleNamespace(service=spine.service), "gone", FIRE) is None  # type: ignore[arg-type]
    (event,) = spine.store.events
    assert (event.action, event.run_id, event.body["runbook"]) == ("schedule_refused", None, "gone")


def test_an_event_recorded_once_per_episode(spine: Spine) -> None:
    """record_event_once appends for a new value of the matched fields only."""
    body = {"runbook": "nightly", "last_success": "never", "max_age_seconds": 60}
    assert spine.service.record_event_once("scheduler", "drill_stale_alerted", body, match=("runbook", "last_success"))
    assert not spine.service.record_event_once("scheduler", "drill_stale_alerted", {**body, "max_age_seconds": 5},
                                               match=("runbook", "last_success"))
    assert spine.service.record_event_once("scheduler", "drill_stale_alerted", {**body, "last_success": "x"},
                                           match=("runbook", "last_success"))


def test_heartbeats_report_cancel_requests_of_running_runs(spine: Spine) -> None:
    """heartbeat answers, for running runs only, whether a cancel was asked."""
    res = spine.service.request("free", {"target": "api"}, spine.op("alice"))
    assert spine.service.heartbeat([res.run.id]) == {}  # queued, not running
    with spine.store.transaction() as tx:
        tx.claim_next("w")
    assert spine.service.heartbeat([res.run.id]) == {res.run.id: False}
    spine.service.cancel(res.run.id, spine.op("alice"))
    assert spine.service.heartbeat([res.run.id]) == {res.run.id: True}
