"""RunProcesses: a run's whole process tree (setsid'd grandchildren included) is found and ended."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bot.execution.processes import RunProcesses, choose_tracking, owner_alive, this_process
from tests.support.processes import alive
from tests.support.waiting import wait_for


def _tree(processes: RunProcesses, tmp_path: Path) -> tuple[subprocess.Popen[bytes], list[int]]:
    """A leader that starts two grandchildren in sessions of their own (as ansible-playbook's forks are)."""
    pids = tmp_path / "pids"
    child = f"setsid sh -c 'echo $$ >> {pids}; exec sleep 300'"
    script = f"{child} & {child} & wait"
    leader = subprocess.Popen(processes.wrap(["/bin/sh", "-c", script]), env={**os.environ, **processes.env()})
    found = wait_for(lambda: len(f := (pids.read_text().split() if pids.exists() else [])) == 2 and f,
                     timeout=10, what="the grandchildren to start")
    return leader, [int(p) for p in found]


@pytest.mark.parametrize("kind", ["cgroup2", "freezer", "environ"])
def test_end_kills_grandchildren_in_other_sessions(kind: str, tmp_path: Path) -> None:
    """end() leaves nothing alive, whatever session or process group the run's processes moved to."""
    chosen, parent = choose_tracking(kind)
    if chosen != kind:
        pytest.skip(f"{kind} is not usable on this machine")
    processes = RunProcesses.create("t1", chosen, parent)
    leader, grandchildren = _tree(processes, tmp_path)
    try:
        assert all(alive(p) for p in grandchildren)
        assert set(grandchildren) <= set(processes.pids())
        assert processes.end(grace=2.0) == []
        leader.wait(timeout=10)
        assert not any(alive(p) for p in grandchildren)
        assert processes.pids() == []
    finally:
        for p in grandchildren:
            if alive(p):
                os.kill(p, 9)
        processes.release()
    if processes.cgroup is not None:
        assert not processes.cgroup.exists()


def test_a_record_read_back_ends_the_same_processes(tmp_path: Path) -> None:
    """Another process (a restarted worker) can end a run from its stored record alone."""
    kind, parent = choose_tracking("auto")
    processes = RunProcesses.create("t2", kind, parent)
    leader, grandchildren = _tree(processes, tmp_path)
    try:
        again = RunProcesses.from_record(processes.as_record())
        assert again.end(grace=2.0) == []
        leader.wait(timeout=10)
        assert not any(alive(p) for p in grandchildren)
    finally:
        for p in grandchildren:
            if alive(p):
                os.kill(p, 9)
        processes.release()


def test_owner_alive_recognises_this_process_and_not_a_dead_one() -> None:
    """A run's owner is alive only if pid and start time both match (a reused pid is not the owner)."""
    me = this_process()
    assert owner_alive(me)
    assert not owner_alive({**me, "owner": {"pid": me["owner"]["pid"], "start": -1}})
    assert not owner_alive({**me, "host": "another-host"})
