"""View submission listeners (the run modal)."""

from __future__ import annotations

from slack_bolt import App

from bot.slack import ids
from bot.slack.deps import Deps
from bot.slack.listeners.views import run_modal


def register(app: App, deps: Deps) -> None:
    app.view(ids.VIEW_RUN)(run_modal.make(deps))
