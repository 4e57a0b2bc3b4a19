"""Block action listeners (the approval card's buttons)."""

from __future__ import annotations

from slack_bolt import App

from bot.slack import ids
from bot.slack.deps import Deps
from bot.slack.listeners.actions import decide


def register(app: App, deps: Deps) -> None:
    app.action(ids.ACTION_APPROVE)(decide.make(deps, "approve"))
    app.action(ids.ACTION_DENY)(decide.make(deps, "deny"))
