"""The restore drill's report (pgbackrest_drill module, step report): RTO, RPO, checks, PASS/FAIL.

Imported as `ansible.module_utils.pgbackrest_drill_report`. The report is the run's artifact and its
set_stats `result`; `runbook-bot drills` reads rto_seconds, rpo_seconds, result, backup.label, failed_check.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ansible.module_utils.pgbackrest_drill_state import DrillState
from ansible.module_utils.pgbackrest_drill_text import iso


def build_report(st: DrillState, p: dict[str, Any], scratch_dir: str, end: float) -> tuple[dict[str, Any], str]:
    """(report, one summary line) from the state the steps left and the module's params."""
    failure = p["failure"] or ""
    target_kind = st.get("target_kind")
    backup = st.get("backup") or {}
    if target_kind == "time":
        target_epoch, basis = st.get("target_epoch"), "the target timestamp"
    elif target_kind == "immediate":
        target_epoch, basis = backup.get("stop_epoch"), "the end of the backup"
    else:
        target_epoch, basis = st.get("restore_started_at"), "the start of the drill (latest)"
    replay = st.get("last_replay_epoch")
    if replay is None and st.get("read_write_at") and backup.get("stop_epoch"):
        replay, st["last_replay_source"] = float(backup["stop_epoch"]), "backup stop time (no transaction replayed)"
    rpo = round(max(0.0, target_epoch - replay), 3) if (target_epoch is not None and replay is not None) else None
    checks = st.get("checks", [])
    failed = [c["name"] for c in checks if not c["ok"]]
    ok = not failure and not failed and st.get("read_write_at") is not None
    timings: dict[str, float | None] = dict(st.get("timings", {}))
    timings["total_seconds"] = round(end - st["drill_started_at"], 3) if st.get("drill_started_at") else None
    report = {
        "kind": "pgbackrest_restore_drill",
        "result": "PASS" if ok else "FAIL",
        "stanza": p["stanza"],
        "target": p["target"],
        "started_at": iso(st.get("drill_started_at")),
        "finished_at": iso(end),
        "backup": {k: v for k, v in backup.items() if k != "stop_epoch"},
        "rto_seconds": st.get("rto_seconds"),
        "rpo_seconds": rpo,
        "rpo_basis": f"{basis} vs {st.get('last_replay_source', 'n/a')}",
        "target_time": iso(target_epoch),
        "last_replayed_xact_at": iso(replay),
        "recovery_end_lsn": st.get("recovery_end_lsn"),
        "archive_max": st.get("archive_max"),
        "timings": timings,
        "checks": checks,
        "failed_checks": failed,
        "failed_check": failed[0] if failed else None,
        "failure": failure or None,
        "cleanup": st.get("cleanup"),
        "drill_port": p["drill_port"],
        "scratch_dir": scratch_dir,
    }
    rto = f"RTO {st['rto_seconds']:.1f}s" if st.get("rto_seconds") is not None else "RTO n/a"
    rpo_s = f"RPO {rpo:.1f}s" if rpo is not None else "RPO n/a"
    summary = f"{report['result']} restore drill {p['stanza']}: {rto}, {rpo_s}, backup {backup.get('label', 'n/a')}"
    if not ok:
        summary += f" ({failure or ', '.join('check=' + n for n in failed)})"
    return report, summary


def write_report(report_path: str, report: dict[str, Any]) -> None:
    """Write the JSON report atomically (a reader never sees half of it)."""
    path = os.path.abspath(report_path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
