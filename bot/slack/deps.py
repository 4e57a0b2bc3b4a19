"""What the Slack listeners share: the service, two small executors, identity and channel checks.

Work submitted to a lane names the Slack request it answers (`Origin`): an unexpected failure there is
logged and explained by bot.slack.failures, like one on Bolt's own threads.

Two lanes of capacity: `executor` computes plans (`/runbook run` and the run modal run check mode: seconds
each), `quick` takes everything a person waits on that is short (approve/deny clicks, cancel, status, list,
history). A burst of slow check modes fills only the first lane, so a click is still processed at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from slack_bolt import Respond
from slack_sdk import WebClient

from bot.domain.policy import Operator
from bot.service import RunService
from bot.slack import failures


@dataclass(frozen=True)
class Origin:
    """The Slack request a piece of lane work answers: where an unexpected failure of it is explained."""

    body: Mapping[str, Any]
    client: WebClient | None = None
    respond: Respond | None = None


@dataclass
class Deps:
    service: RunService
    executor: Executor  # slow work (check mode) runs here, never on Bolt's listener threads
    approval_channel: str | None
    quick: Executor | None = None  # decisions, cancels, reads; None: share `executor` (single-lane use)

    def operator(self, slack_user_id: str) -> Operator | None:
        """The operator behind a signed Slack user id (never a display name)."""
        return self.service.directory.by_slack_id(slack_user_id) if slack_user_id else None

    def command_channel_allowed(self, channel_id: str, channel_name: str) -> bool:
        allowed = self.service.directory.command_channels
        if not allowed:
            return True
        names = {channel_id, channel_name, f"#{channel_name}"}
        return any(c in names for c in allowed)

    def submit(self, fn: Callable[..., Any], *args: Any, origin: Origin) -> None:
        """Slow work (a plan in check mode) on the planning lane."""
        self.executor.submit(_guarded(fn, args, origin))

    def submit_quick(self, fn: Callable[..., Any], *args: Any, origin: Origin) -> None:
        """Short work someone waits on (a decision, a cancel, a read) on its own lane."""
        (self.quick or self.executor).submit(_guarded(fn, args, origin))


def _guarded(fn: Callable[..., Any], args: tuple[Any, ...], origin: Origin) -> Callable[[], None]:
    def guarded() -> None:
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - reported once, as the @app.error handler reports
            failures.report(e, origin.body, origin.respond, origin.client)

    return guarded


def unknown_user_text(user_id: str) -> str:
    return (f"Your Slack user id {user_id} is not in the operators file: ask an admin to add "
            f"`yourname: {{slack: {user_id}}}` under `operators:` (RUNBOOK_BOT_CONFIG).")
