"""Slash command listeners."""

from __future__ import annotations

from slack_bolt import App

from bot.slack import ids
from bot.slack.deps import Deps
from bot.slack.listeners.commands import runbook


def register(app: App, deps: Deps) -> None:
    app.command(ids.COMMAND)(runbook.make(deps))
