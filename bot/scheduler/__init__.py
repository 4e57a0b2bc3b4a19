"""APScheduler 3 jobs that call the spine: scheduled runbooks, approval expiry, drill staleness.

Every replica may run the scheduler. A scheduled fire becomes a run only for the replica that claims the
(job, fire time) first (RunService.claim_schedule_fire: a unique key in the run store, not luck).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.domain.ids import OperatorName
from bot.domain.policy import Operator
from bot.errors import RunbookBotError
from bot.scheduler.drills import new_stale_alerts, staleness_metrics

if TYPE_CHECKING:
    from bot.spine import Spine

log = logging.getLogger(__name__)
SCHEDULER = Operator(OperatorName("scheduler"))
MISFIRE_GRACE_SECONDS = 600
AlertSink = Callable[[str], None]  # receives drill staleness alerts (serve passes Slack's notifier)


def latest_fire_time(cron: str, now: datetime) -> datetime:
    """The most recent time <= now at which `cron` (UTC) fires: the key of this fire."""
    from apscheduler.triggers.cron import CronTrigger

    trigger = CronTrigger.from_crontab(cron, timezone=UTC)
    start = now - timedelta(seconds=MISFIRE_GRACE_SECONDS + 60)
    fire = trigger.get_next_fire_time(None, start)
    last = None
    while fire is not None and fire <= now:
        last = fire
        fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
    return (last or now.replace(second=0, microsecond=0)).astimezone(UTC)


def fire_scheduled(ctx: Spine, runbook_name: str, fire_time: datetime) -> int | None:
    """Request the scheduled run for this fire time unless another replica already did; returns the run id."""
    job_id = f"runbook:{runbook_name}"
    if not ctx.service.claim_schedule_fire(job_id, fire_time):
        log.info("%s at %s was already fired by another replica", job_id, fire_time.isoformat())
        return None
    key = f"{runbook_name}@{fire_time.isoformat()}"
    try:
        res = ctx.service.request(runbook_name, {}, SCHEDULER, reason=f"scheduled ({fire_time.isoformat()})",
                                  source="scheduler", schedule_key=key, preapproved=True)
    except RunbookBotError as e:
        ctx.service.record_event(SCHEDULER.name, "schedule_refused",
                                 {"runbook": runbook_name, "fire_time": fire_time.isoformat(), "error": str(e)})
        log.warning("scheduled %s not started: %s", runbook_name, e)
        return None
    ctx.service.link_schedule_fire(job_id, fire_time, res.run.id)
    return res.run.id


def check_staleness(ctx: Spine, alert_sinks: Sequence[AlertSink] = ()) -> list[str]:
    """Alert once per staleness episode for each drill runbook with no successful drill newer than its max
    age (remembered in the audit trail, so a restart or another replica does not repeat it): logged, and
    given to each of `alert_sinks`."""
    alerts = new_stale_alerts(ctx, SCHEDULER.name)
    for text in alerts:
        log.warning("%s", text)
        for sink in alert_sinks:
            try:
                sink(text)
            except Exception:
                log.exception("staleness alert sink failed")
    return alerts


class SchedulerHandle:
    """The running scheduler: call it (or `.stop()`) to stop; `.scheduler` for inspection."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def __call__(self) -> None:
        self.stop()


def start(ctx: Spine, *, alert_sinks: Sequence[AlertSink] = ()) -> SchedulerHandle:
    """Start the BackgroundScheduler with one job per scheduled runbook; returns a handle that stops it.
    Drill staleness alerts go to `alert_sinks` (and the log)."""
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger

    sched = BackgroundScheduler(timezone=UTC, job_defaults={
        "coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE_SECONDS,
    })
    for rb in ctx.service.catalog:
        if not rb.schedule:
            continue
        cron = rb.schedule

        def job(name: str = rb.name, cron: str = cron) -> None:
            fire_scheduled(ctx, name, latest_fire_time(cron, datetime.now(UTC)))

        sched.add_job(job, CronTrigger.from_crontab(cron, timezone=UTC), id=f"runbook:{rb.name}",
                      name=f"scheduled {rb.name}", replace_existing=True)
        log.info("scheduled %s: %s (UTC)", rb.name, cron)
    sched.add_job(ctx.service.expire_overdue, "interval", seconds=30, id="expire-pending", replace_existing=True)
    sched.add_job(check_staleness, "interval", args=[ctx, tuple(alert_sinks)], hours=6, id="drill-staleness",
                  next_run_time=datetime.now(UTC) + timedelta(seconds=5), replace_existing=True)
    sched.start()
    return SchedulerHandle(sched)


def metrics(ctx: Spine) -> list[str]:
    """Prometheus lines for /metrics (seconds since the last good drill, per drill runbook)."""
    return staleness_metrics(ctx)
