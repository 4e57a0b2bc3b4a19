"""The shared code of the project's Ansible modules (playbooks/module_utils), imported as the modules do."""

from __future__ import annotations

import time
from typing import Any, NoReturn

import pytest

from tests.support.module_utils import module_util

rm = module_util("runbook_module")
node = module_util("heap_snapshot_node")


class _Reported(Exception):
    def __init__(self, kind: str, fields: dict[str, Any]) -> None:
        super().__init__(kind)
        self.kind, self.fields = kind, fields


class _Module:
    def exit_json(self, **kwargs: Any) -> NoReturn:
        raise _Reported("exit", kwargs)

    def fail_json(self, msg: str, **kwargs: Any) -> NoReturn:
        raise _Reported("fail", {"msg": msg, **kwargs})


def test_run_reports_the_result_or_the_operator_error_with_its_fields() -> None:
    """exit_json with the body's result; an OperatorError becomes fail_json(msg, **fields)."""
    with pytest.raises(_Reported) as done:
        rm.run(_Module(), lambda: {"changed": True})
    assert (done.value.kind, done.value.fields) == ("exit", {"changed": True})

    def refuse() -> dict[str, Any]:
        raise rm.OperatorError("Deployment prod/api not found", path="/x")

    with pytest.raises(_Reported) as done:
        rm.run(_Module(), refuse)
    assert (done.value.kind, done.value.fields) == ("fail", {"msg": "Deployment prod/api not found", "path": "/x"})


def test_run_lets_a_bug_through_unless_translated() -> None:
    """Other exceptions propagate (a traceback: a bug), unless `translate` turns them into an OperatorError."""
    def broken() -> dict[str, Any]:
        raise KeyError("oops")

    with pytest.raises(KeyError):
        rm.run(_Module(), broken)
    with pytest.raises(_Reported) as done:
        rm.run(_Module(), broken, lambda e: rm.OperatorError(f"api said {e}"))
    assert done.value.fields == {"msg": "api said 'oops'"}


def test_dispatch_calls_step_methods_and_names_the_known_ones() -> None:
    class Steps:
        def step_plan(self) -> str:
            return "planned"

        def step_apply(self) -> str:
            return "applied"

    assert rm.dispatch(Steps(), "plan") == "planned"
    with pytest.raises(rm.OperatorError, match=r"unknown step 'drop' \(steps: apply, plan\)"):
        rm.dispatch(Steps(), "drop")


class _Growing:
    """A snapshot file that appears on the second poll and grows for three polls, then ends like a snapshot."""

    directory = "/diag"
    no_file_hint = "check the directory"

    def __init__(self, sizes: list[int], tail: bytes = b']}\n', alive: bool = True) -> None:
        self.sizes, self._tail, self.alive, self.polls = sizes, tail, alive, 0

    def new_file(self) -> str | None:
        self.polls += 1
        return "/diag/Heap.1.heapsnapshot" if self.polls >= 2 else None

    def size(self, path: str) -> int:
        return self.sizes.pop(0) if len(self.sizes) > 1 else self.sizes[0]

    def tail(self, path: str) -> bytes:
        return self._tail

    def check_alive(self, path: str | None) -> None:
        if not self.alive:
            raise rm.OperatorError(f"process exited ({path})")


def test_wait_for_snapshot_returns_once_the_size_is_stable_and_the_file_complete() -> None:
    snap = node.wait_for_snapshot(_Growing([10, 20, 30]), time.monotonic(), timeout=60, interval=0, stable_polls=2)
    assert (snap.path, snap.size) == ("/diag/Heap.1.heapsnapshot", 30)


def test_wait_for_snapshot_reports_a_process_that_died() -> None:
    with pytest.raises(rm.OperatorError, match="process exited"):
        node.wait_for_snapshot(_Growing([5], alive=False), time.monotonic(), timeout=60, interval=0, stable_polls=2)
