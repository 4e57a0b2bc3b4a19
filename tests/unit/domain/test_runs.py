"""The run state machine."""

from __future__ import annotations

from bot.domain.runs import RunState, can_transition


def test_state_machine() -> None:
    """Only the documented transitions are allowed; final states are final."""
    assert can_transition(RunState.PENDING_APPROVAL, RunState.EXPIRED)
    assert can_transition(RunState.RUNNING, RunState.INTERRUPTED)
    assert not can_transition(RunState.QUEUED, RunState.SUCCEEDED)
    assert not can_transition(RunState.DENIED, RunState.QUEUED)
    assert all(s.terminal for s in (RunState.SUCCEEDED, RunState.EXPIRED, RunState.INTERRUPTED))
