"""The Bolt app factory. Nothing Slack-related is built at import time: `create_app` builds it on demand."""

from __future__ import annotations

import logging
from concurrent.futures import Executor

from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bot.config import Settings
from bot.errors import ConfigError
from bot.service import RunService
from bot.slack.deps import Deps
from bot.slack.listeners import register

log = logging.getLogger(__name__)


def approval_channel(settings: Settings, service: RunService) -> str | None:
    """The approvals channel: the operators file's `channels.approvals`, else SLACK_APPROVAL_CHANNEL."""
    return service.directory.channels.get("approvals") or settings.slack_approval_channel


def make_client(settings: Settings) -> WebClient:
    """A Web API client; SLACK_API_URL redirects it (GovSlack, a proxy, the tests' fake Slack)."""
    if not settings.slack_bot_token:
        raise ConfigError("SLACK_BOT_TOKEN is not set: the Slack front end needs the bot token (xoxb-...)")
    base = _base_url(settings.slack_api_url) if settings.slack_api_url else WebClient.BASE_URL
    client = WebClient(token=settings.slack_bot_token, base_url=base, timeout=10)
    client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=2))
    return client


def _base_url(url: str) -> str:
    return url if url.endswith("/") else url + "/"  # slack_sdk joins method names onto it


class _GivenClientFilter(logging.Filter):
    """bolt-python's App() reads SLACK_BOT_TOKEN from the environment itself and then warns that the token
    "will be unused" because we pass a client built from that same token: a dependency quirk, not something
    an operator can act on, so that one message is dropped (here only)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


def create_app(settings: Settings, service: RunService, *, executor: Executor, socket_mode: bool = False,
               client: WebClient | None = None, quick_executor: Executor | None = None) -> App:
    """The Bolt app with every listener registered. `executor` computes plans (check mode);
    `quick_executor` takes decisions, cancels and reads, so they never queue behind plans.

    HTTP mode verifies each request's signature with SLACK_SIGNING_SECRET (401 otherwise); Socket Mode
    requests arrive over the authenticated WebSocket instead. Building the app calls auth.test.
    """
    client = client or make_client(settings)
    if not socket_mode and not settings.slack_signing_secret:
        raise ConfigError("SLACK_SIGNING_SECRET is not set: HTTP mode verifies every request with it "
                          "(or set SLACK_APP_TOKEN for Socket Mode)")
    bolt_log = logging.getLogger("bot.slack.bolt")
    if not any(isinstance(f, _GivenClientFilter) for f in bolt_log.filters):
        bolt_log.addFilter(_GivenClientFilter())
    app = App(
        client=client, signing_secret=settings.slack_signing_secret or "",
        request_verification_enabled=not socket_mode, token_verification_enabled=True,
        process_before_response=False, logger=bolt_log,
    )
    register(app, Deps(service=service, executor=executor, approval_channel=approval_channel(settings, service),
                       quick=quick_executor))
    return app
