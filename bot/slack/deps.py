"""What the Slack listeners share: the service, a small executor for slow work, identity and channel checks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from bot.domain.policy import Operator
from bot.service import RunService

log = logging.getLogger(__name__)


@dataclass
class Deps:
    service: RunService
    executor: Executor  # slow work (check mode, database) runs here, never on Bolt's listener threads
    approval_channel: str | None

    def operator(self, slack_user_id: str) -> Operator | None:
        """The operator behind a signed Slack user id (never a display name)."""
        return self.service.directory.by_slack_id(slack_user_id) if slack_user_id else None

    def command_channel_allowed(self, channel_id: str, channel_name: str) -> bool:
        allowed = self.service.directory.command_channels
        if not allowed:
            return True
        names = {channel_id, channel_name, f"#{channel_name}"}
        return any(c in names for c in allowed)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        def guarded() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("Slack listener work failed")

        self.executor.submit(guarded)


def unknown_user_text(user_id: str) -> str:
    return (f"Your Slack user id {user_id} is not in the operators file: ask an admin to add "
            f"`yourname: {{slack: {user_id}}}` under `operators:` (RUNBOOK_BOT_CONFIG).")
