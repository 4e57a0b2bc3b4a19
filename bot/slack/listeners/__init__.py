"""Listener registration: one package per kind (commands, actions, views), one module per callback, and
the app's one error handler (bot.slack.failures)."""

from __future__ import annotations

from slack_bolt import App

from bot.slack import failures
from bot.slack.deps import Deps
from bot.slack.listeners import actions, commands, views


def register(app: App, deps: Deps) -> None:
    commands.register(app, deps)
    actions.register(app, deps)
    views.register(app, deps)
    app.error(failures.on_error)
