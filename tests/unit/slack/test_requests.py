"""The HTTP-mode gate in front of Bolt: Slack's v0 signature and timestamp, checked on raw bytes."""

from __future__ import annotations

import pytest

from bot.slack.requests import Refusal, Signed, check_signature, is_retry
from tests.fakes.slack_api import signature

SECRET = "unit-secret"
NOW = 1_800_000_000.0
BODY = b"payload={not-json"


def _headers(ts: str, sig: str | None = None) -> dict[str, str]:
    return {"x-slack-request-timestamp": ts, "x-slack-signature": sig or signature(SECRET, ts, BODY.decode())}


def test_a_signed_request_is_identified_by_timestamp_and_signature() -> None:
    """A correct signature inside the window passes, whatever the body says (parsing comes later)."""
    headers = _headers(str(int(NOW)))
    assert check_signature(SECRET, headers, BODY, NOW) == Signed(int(NOW), headers["x-slack-signature"])


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401),
    ({"x-slack-request-timestamp": str(int(NOW))}, 401),
    (_headers("abc", "v0=00"), 400),
    (_headers("²", "v0=00"), 400),
    (_headers("-5", "v0=00"), 400),
    (_headers(str(int(NOW) - 301)), 401),
    (_headers(str(int(NOW) + 301)), 401),
    (_headers(str(int(NOW)), "v0=" + "0" * 64), 401),
    (_headers(str(int(NOW)), "not ascii ü"), 401),
])
def test_unsigned_malformed_and_stale_requests_are_refused(headers: dict[str, str], status: int) -> None:
    """Missing headers, a non-numeric timestamp, a stale or future timestamp and a wrong signature are refused."""
    verdict = check_signature(SECRET, headers, BODY, NOW)
    assert isinstance(verdict, Refusal) and verdict.status == status and verdict.reason


def test_slack_retries_are_recognised() -> None:
    """Either of Slack's retry headers marks a redelivery."""
    assert is_retry({"x-slack-retry-num": "1"}) and is_retry({"x-slack-retry-reason": "http_timeout"})
    assert not is_retry({"x-slack-signature": "v0=1"})
