"""The in-memory run store keeps the PostgreSQL store's guarantees (bot.testing.InMemoryRunStore)."""

from __future__ import annotations

import pytest

from bot import testing
from bot.domain.runs import NewRun, RunState
from bot.errors import LockHeld, RunStateError, StorageError


def _new(lock: str | None = "k/a", state: RunState = RunState.PENDING_APPROVAL) -> NewRun:
    return NewRun(runbook="echo", state=state, params={"target": "a"}, requested_by="alice", reason="",
                  source="cli", plan={}, plan_hash="h", lock_key=lock, approvals_required=1, ttl_seconds=60,
                  notify={})


def test_an_exception_inside_a_transaction_leaves_nothing() -> None:
    """A transaction that raises rolls back every write it made, audit events included."""
    store = testing.InMemoryRunStore(testing.ManualClock())
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.insert(_new())
        raise RuntimeError("boom")
    assert store.events == []
    with store.transaction() as tx:
        assert tx.list_runs() == []


def test_one_active_run_per_lock_key() -> None:
    """A second active run for a held lock key is refused with the holder's id; a final one frees it."""
    store = testing.InMemoryRunStore(testing.ManualClock())
    with store.transaction() as tx:
        first = tx.insert(_new())
    with pytest.raises(LockHeld) as e, store.transaction() as tx:
        tx.insert(_new())
    assert e.value.holder == first
    with store.transaction() as tx:
        tx.transition(tx.get(first), RunState.CANCELLED, actor="alice")
        tx.insert(_new())


def test_transitions_follow_the_state_machine() -> None:
    """A transition the state machine forbids, or from a state the run already left, is refused."""
    store = testing.InMemoryRunStore(testing.ManualClock())
    with store.transaction() as tx:
        run = tx.get(tx.insert(_new()))
        with pytest.raises(RunStateError):
            tx.transition(run, RunState.SUCCEEDED, actor="x")
        tx.transition(run, RunState.QUEUED, actor="bob")
        with pytest.raises(RunStateError, match="is now queued"):
            tx.transition(run, RunState.DENIED, actor="bob")
    assert store.actions(run.id) == ["requested", "queued"]


def test_a_store_that_is_down_raises_storage_error() -> None:
    """go_down makes every transaction fail with StorageError until come_back."""
    store = testing.InMemoryRunStore()
    store.go_down()
    with pytest.raises(StorageError, match="nothing was changed"), store.transaction():
        pass
    store.come_back()
    with store.transaction() as tx:
        assert tx.counts_by_state() == {}
