"""The state a restore drill carries from step to step (pgbackrest_drill module), typed.

Each step of the module returns the state as `drill`; the playbook hands it to the next step as `state`.
Imported as `ansible.module_utils.pgbackrest_drill_state`.
"""

from __future__ import annotations

from typing import Any, TypedDict

from ansible.module_utils.runbook_module import OperatorError


class Check(TypedDict, total=False):
    name: str
    ok: bool
    detail: str
    seconds: float


class DrillState(TypedDict, total=False):
    checks: list[Check]
    failed_checks: list[str]
    timings: dict[str, float]
    # preflight (what the drill is of: the report names them)
    stanza: str
    target: str
    scratch_dir: str
    drill_port: int
    target_kind: str  # latest | immediate | time
    target_epoch: float | None
    scratch_status: str  # absent | ours | foreign ...
    backup: dict[str, Any]  # label, type, sizes, start/stop epochs and LSNs of the chosen backup
    archive_max: str | None
    # restore and start
    created_scratch: bool
    drill_started_at: float
    restore_started_at: float
    start_started_at: float
    read_write_at: float
    rto_seconds: float
    data_checksums: bool
    wal_segment_size: int
    last_replay_epoch: float
    last_replay_source: str
    recovery_end_lsn: str
    recovery_end_timeline: int
    # verify and cleanup
    stopped: str
    cleanup: dict[str, Any]


class CheckFailed(OperatorError):
    """A named drill check failed: `check=NAME failed: detail`."""

    def __init__(self, failures: list[tuple[str, str]]) -> None:
        self.failures = failures
        super().__init__("; ".join(f"check={n} failed: {d}" for n, d in failures))
