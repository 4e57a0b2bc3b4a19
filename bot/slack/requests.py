"""The gate in front of Bolt for HTTP mode: Slack's v0 request signature, checked on the raw bytes before
anything parses them, and the headers that mark Slack's own retries.

https://api.slack.com/authentication/verifying-requests-from-slack: the signature is
`v0=` + HMAC-SHA256(signing secret, `v0:{X-Slack-Request-Timestamp}:{body}`), and a timestamp more than
five minutes from now is a replay. Pure functions of (secret, headers, body, now): no I/O, no Bolt.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

WINDOW_SECONDS = 5 * 60  # Slack's replay window; seen (timestamp, signature) pairs are kept a bit longer
RETRY_HEADERS = ("x-slack-retry-num", "x-slack-retry-reason")


@dataclass(frozen=True)
class Refusal:
    """Why a request is not for us: the HTTP status to answer and a one-line reason for the log."""

    status: int
    reason: str


@dataclass(frozen=True)
class Signed:
    """A request whose signature checked out: its timestamp and signature identify it (replays)."""

    timestamp: int
    signature: str


def check_signature(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> Signed | Refusal:
    """`headers` with lower-case names. Missing or wrong signature: 401; a timestamp that is not a
    number: 400; outside the five-minute window: 401."""
    raw_ts = headers.get("x-slack-request-timestamp", "")
    sig = headers.get("x-slack-signature", "")
    if not raw_ts or not sig:
        return Refusal(401, "unsigned request (no X-Slack-Signature / X-Slack-Request-Timestamp)")
    if not (raw_ts.isascii() and raw_ts.isdigit()) or len(raw_ts) > 12:
        return Refusal(400, "malformed X-Slack-Request-Timestamp")
    ts = int(raw_ts)
    if abs(now - ts) > WINDOW_SECONDS:
        return Refusal(401, "request timestamp outside the five-minute window (a replay, or a wrong clock)")
    if not secret:
        return Refusal(401, "no signing secret configured")
    expected = "v0=" + hmac.new(secret.encode(), b"v0:" + raw_ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), sig.encode("utf-8", errors="replace")):
        return Refusal(401, "bad request signature")
    return Signed(ts, sig)


def is_retry(headers: Mapping[str, str]) -> bool:
    """Slack's own redelivery of something it already sent (the first delivery did the work)."""
    return any(h in headers for h in RETRY_HEADERS)
