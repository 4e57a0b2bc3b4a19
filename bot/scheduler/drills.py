"""Restore drill evidence: history (RTO, RPO, result), staleness, and the RTO trend charts.

A run is a drill when its `result` carries `rto_seconds` (the restore drill playbook's report does).
A runbook with `drill: {max_age: 8d}` in its front matter must have a successful drill newer than that.
A staleness episode (one runbook, stale since the same last good drill) is alerted once: the alert is an
audit event (`drill_stale_alerted`), so every replica and every restart knows it was already said.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from bot.domain.durations import format_duration
from bot.domain.runs import Run, RunState
from bot.domain.text import visible

if TYPE_CHECKING:
    from bot.spine import Spine


@dataclass(frozen=True)
class Drill:
    run_id: int
    runbook: str
    state: str
    finished_at: datetime | None
    passed: bool
    rto_seconds: float | None
    rpo_seconds: float | None
    backup: str
    failed_check: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "runbook": self.runbook, "state": self.state,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None, "passed": self.passed,
            "rto_seconds": self.rto_seconds, "rpo_seconds": self.rpo_seconds, "backup": self.backup,
            "failed_check": self.failed_check,
        }


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _drill(run: Run) -> Drill:
    r = run.result
    raw_backup = r.get("backup")
    backup: dict[str, Any] = raw_backup if isinstance(raw_backup, dict) else {}
    verdict = str(r.get("result", "")).upper()
    passed = run.state is RunState.SUCCEEDED and verdict in ("PASS", "")
    failed = r.get("failed_check")
    if failed is None and isinstance(r.get("checks"), list):
        failed = next((c.get("name") for c in r["checks"] if isinstance(c, dict) and c.get("ok") is False), None)
    return Drill(run.id, run.runbook, run.state.value, run.finished_at, passed, _num(r.get("rto_seconds")),
                 _num(r.get("rpo_seconds")), str(backup.get("label", "")), str(failed) if failed else None)


def drill_history(ctx: Spine, runbook: str | None = None, limit: int = 200) -> list[Drill]:
    return [_drill(r) for r in ctx.service.runs_with_result("rto_seconds", runbook=runbook, limit=limit)]


@dataclass(frozen=True)
class Staleness:
    runbook: str
    max_age_seconds: int
    last_good: datetime | None

    @property
    def age_seconds(self) -> float:
        if self.last_good is None:
            return math.inf
        return (datetime.now(UTC) - self.last_good).total_seconds()

    @property
    def stale(self) -> bool:
        return self.age_seconds > self.max_age_seconds

    @property
    def alert(self) -> str | None:
        if not self.stale:
            return None
        when = ("no successful restore drill on record" if self.last_good is None
                else f"last successful restore drill {format_duration(self.age_seconds)} ago")
        return (f"restore drill evidence is stale for {self.runbook}: {when} (max age "
                f"{format_duration(self.max_age_seconds)}). A backup nobody restored is a hope, not a backup: "
                f"runbook-bot request {self.runbook}")


def drill_staleness(ctx: Spine) -> list[Staleness]:
    out = []
    for rb in ctx.service.catalog:
        if rb.drill_max_age_seconds is None:
            continue
        good = [d.finished_at for d in drill_history(ctx, rb.name, limit=50) if d.passed and d.finished_at]
        out.append(Staleness(rb.name, rb.drill_max_age_seconds, max(good, default=None)))
    return out


STALE_ALERTED = "drill_stale_alerted"


def _episode(s: Staleness) -> str:
    return s.last_good.isoformat() if s.last_good else "never"


def new_stale_alerts(ctx: Spine, actor: str = "scheduler") -> list[str]:
    """Alerts for staleness episodes not alerted before, each recorded in the audit trail as it is returned."""
    fresh = []
    for s in drill_staleness(ctx):
        if not s.alert:
            continue
        body = {"runbook": s.runbook, "last_success": _episode(s), "max_age_seconds": s.max_age_seconds}
        if ctx.service.record_event_once(actor, STALE_ALERTED, body, match=("runbook", "last_success")):
            fresh.append(s.alert)
    return fresh


def staleness_metrics(ctx: Spine) -> list[str]:
    lines = [
        "# HELP runbook_bot_drill_seconds_since_success Seconds since the last successful restore drill.",
        "# TYPE runbook_bot_drill_seconds_since_success gauge",
    ]
    stale_lines = ["# HELP runbook_bot_drill_stale 1 when the drill evidence is older than its max age.",
                   "# TYPE runbook_bot_drill_stale gauge"]
    for s in drill_staleness(ctx):
        age = "+Inf" if math.isinf(s.age_seconds) else f"{s.age_seconds:.0f}"
        lines.append(f'runbook_bot_drill_seconds_since_success{{runbook="{s.runbook}"}} {age}')
        stale_lines.append(f'runbook_bot_drill_stale{{runbook="{s.runbook}"}} {int(s.stale)}')
    return lines + stale_lines


def _chart_points(drills: list[Drill]) -> list[tuple[datetime, float, bool]]:
    return [(d.finished_at, d.rto_seconds, d.passed) for d in reversed(drills) if d.finished_at and d.rto_seconds]


def write_png(drills: list[Drill], path: Path, *, empty_ok: bool = False) -> Path | None:
    """The RTO trend (oldest first) as a PNG. With nothing to draw: None, or with `empty_ok` a chart that
    says 'no restore drills with an RTO yet' (a file asked for by name is always written)."""
    points = _chart_points(drills)
    if not points and not empty_ok:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num

    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
    if not points:
        ax.set_title("Restore drill RTO")
        ax.text(0.5, 0.5, "no restore drills with an RTO yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        return path
    xs = [float(date2num(p[0])) for p in points]  # type: ignore[no-untyped-call]
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    ys = [p[1] for p in points]
    ax.plot(xs, ys, color="#4062bb", linewidth=1.5)
    ax.scatter(xs, ys, c=["#2e8b57" if p[2] else "#c0392b" for p in points], zorder=3)
    ax.set_title("Restore drill RTO (green pass, red fail)")
    ax.set_ylabel("RTO (s)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def terminal_chart(drills: list[Drill], width: int = 40, last: int = 12) -> str:
    """The RTO trend as horizontal bars, oldest first (no dependency: any terminal, any log)."""
    points = [d for d in reversed(drills) if d.rto_seconds is not None][-last:]
    if len(points) < 2:
        return ""
    top = max(d.rto_seconds or 0.0 for d in points) or 1.0
    eighths = " ▏▎▍▌▋▊▉█"
    lines = ["RTO trend (oldest first)"]
    for d in points:
        cells = (d.rto_seconds or 0.0) / top * width
        bar = "█" * int(cells) + (eighths[int((cells - int(cells)) * 8)] if cells < width else "")
        when = f"{d.finished_at:%m-%d %H:%M}" if d.finished_at else "running"
        lines.append(f"  {when}  {bar.ljust(width + 1)} {d.rto_seconds:7.1f}s {'pass' if d.passed else 'FAIL'}")
    return "\n".join(lines)


def drills_command(ctx: Spine, *, as_json: bool, chart: str | None, out: TextIO) -> int:
    drills = drill_history(ctx)
    stale = drill_staleness(ctx)
    if as_json:
        out.write(json.dumps({"drills": [d.as_json() for d in drills], "staleness": [
            {"runbook": s.runbook, "stale": s.stale, "max_age_seconds": s.max_age_seconds,
             "last_success": s.last_good.isoformat() if s.last_good else None} for s in stale]}, indent=2) + "\n")
        return 0
    if not drills:
        out.write("no restore drills on record\n")
    for d in drills:
        when = f"{d.finished_at:%Y-%m-%d %H:%M}" if d.finished_at else "running"
        rto = f"{d.rto_seconds:.1f}s" if d.rto_seconds is not None else "n/a"
        rpo = f"{d.rpo_seconds:.1f}s" if d.rpo_seconds is not None else "n/a"
        verdict = "PASS" if d.passed else f"FAIL{' (' + visible(d.failed_check) + ')' if d.failed_check else ''}"
        out.write(f"{d.run_id:>6}  {when}  {d.runbook:<20} {verdict:<28} RTO {rto:>8}  RPO {rpo:>8}  "
                  f"{visible(d.backup)}\n")
    for s in stale:
        if s.alert:
            out.write(f"STALE: {s.alert}\n")
    text = terminal_chart(drills)
    if text:
        out.write(text + "\n")
    png = write_png(drills, Path(chart) if chart else ctx.settings.home / "drills" / "rto-trend.png",
                    empty_ok=chart is not None)
    if png is not None:
        empty = "" if _chart_points(drills) else " (empty: no restore drills with an RTO yet)"
        out.write(f"RTO trend chart: {png}{empty}\n")
    return 0
