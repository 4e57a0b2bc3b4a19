"""Waiting for a condition with a deadline: tests poll for what they expect, they never sleep and hope."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition was not met in time (an AssertionError, so pytest reports it as a failed expectation)."""


def wait_for(predicate: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.05,
             what: str | Callable[[], str] = "condition") -> T:
    """Poll `predicate()` until it returns something truthy and return that; raise WaitTimeout after
    `timeout` seconds, naming `what` (a string, or a function called only then for the current state)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")
        time.sleep(interval)
