"""Run events -> Slack: the approval card, its updates, live progress in the card's thread, the result.

Subscribed to `RunService.run_listeners` and `progress_listeners`. Listeners are called on the threads
that cause the events (Slack executor, workers, ansible-runner's event handler), so they only enqueue;
one notifier thread talks to Slack, in event order. Progress is coalesced: the progress message of a run
is edited at most once per `interval` seconds (Slack allows about one chat.update per second per message).

Where the card is (channel, ts) is stored in the run's `notify` column, so whichever process handles a
later event of the run (another replica, a worker) can update the same card.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.domain.policy import Directory
from bot.domain.runs import Run, RunEvent, RunState
from bot.errors import RunbookBotError
from bot.execution.runner import Progress
from bot.service import RunService
from bot.slack import blocks

log = logging.getLogger(__name__)

CARD_EVENTS = frozenset({RunEvent.APPROVED, RunEvent.QUEUED, RunEvent.DENIED, RunEvent.EXPIRED,
                         RunEvent.CANCELLED, RunEvent.CANCEL_REQUESTED, RunEvent.STARTED})


def mentioner(directory: Directory) -> Callable[[str], str]:
    """Operator name -> a Slack mention when the operators file knows the user id, else the escaped name."""

    def mention(name: str) -> str:
        op = directory.operators.get(name)
        return f"<@{op.slack_id}>" if op is not None and op.slack_id else blocks.esc(name)

    return mention


@dataclass
class _Live:
    channel: str
    thread_ts: str
    progress_ts: str | None = None
    lines: list[str] = field(default_factory=list)
    dirty: bool = False
    last_sent: float = 0.0


class Notifier:
    def __init__(self, client: WebClient, service: RunService, approval_channel: str | None,
                 *, interval: float = 1.0) -> None:
        self.client, self.service, self.approval_channel = client, service, approval_channel
        self.interval = interval
        self.mention = mentioner(service.directory)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._queue: queue.Queue[tuple[str, Any, Any] | None] = queue.Queue()
        self._live: dict[int, _Live] = {}
        self._thread = threading.Thread(target=self._loop, name="runbook-slack-notifier", daemon=True)
        self._stopping = threading.Event()

    # ------------------------------------------------------------- subscription (any thread)
    def subscribe(self) -> None:
        self.service.subscribe(self)
        self._thread.start()

    def on_run(self, run: Run, event: RunEvent) -> None:
        self._queue.put(("run", run, event))

    def on_progress(self, run: Run, progress: Progress) -> None:
        self._queue.put(("progress", run, progress))

    def alert(self, text: str) -> None:
        """A sink for the scheduler's alerts (stale restore drills): the `alerts` channel, else approvals."""
        self._queue.put(("alert", None, text))

    def stop(self, timeout: float = 5.0) -> None:
        self.service.unsubscribe(self)
        self._queue.put(None)
        self._thread.join(timeout)

    # ------------------------------------------------------------- the notifier thread
    def _loop(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.interval / 4)
            except queue.Empty:
                item = ("tick", None, None)
            if item is None:
                self._flush_all(force=True)
                return
            kind, run, payload = item
            try:
                if kind == "run":
                    self._handle_run(run, payload)
                elif kind == "progress":
                    self._handle_progress(run, payload)
                elif kind == "alert":
                    channels = self.service.directory.channels
                    channel = channels.get("alerts") or channels.get("drills") or self.approval_channel
                    if channel:
                        self.client.chat_postMessage(channel=channel, text=":warning: " + blocks.esc(payload))
                self._flush_all(force=False)
            except Exception:
                log.exception("Slack notification failed (%s for run %s)", kind, getattr(run, "id", "-"))

    def _card(self, run: Run) -> tuple[str, str] | None:
        card = run.notify.get("card")
        if isinstance(card, dict) and card.get("channel") and card.get("ts"):
            return str(card["channel"]), str(card["ts"])
        live = self._live.get(run.id)
        return (live.channel, live.thread_ts) if live else None

    def _fresh(self, run: Run) -> Run:
        try:
            return self.service.get(run.id)
        except RunbookBotError:
            return run

    def _handle_run(self, run: Run, event: RunEvent) -> None:
        if event is RunEvent.REQUESTED:
            self._post_card(run)
            return
        run = self._fresh(run)
        card = self._card(run)
        if card is None:
            return
        if event in CARD_EVENTS or event.ended:
            self._update_card(run, card)
        if event is RunEvent.STARTED:
            self._start_progress(run, card)
        elif event.ended:
            self._finish(run, card)

    def adopt(self) -> None:
        """Catch up with events other processes caused (the CLI, a separate worker, another replica).

        Pending runs without a card get one; carded runs whose card does not show their state yet get the
        update, and a started or finished run gets its progress message or result. Each of those is claimed
        in the run row first, so whichever process gets there first posts it, once.
        """
        if not self.approval_channel:
            return
        for run in self.service.runs(limit=50):
            notify = run.notify
            unannounced = not notify.get("card") and not notify.get("card_claim")
            if unannounced and (run.state is RunState.PENDING_APPROVAL or run.source == "scheduler"):
                # Scheduled runs (often fired by a standalone `runbook-bot scheduler`) are reported too.
                self.on_run(run, RunEvent.REQUESTED)
            elif not notify.get("card"):
                continue
            elif run.state is RunState.RUNNING and not notify.get("progress_claim"):
                self.on_run(run, RunEvent.STARTED)
            elif RunEvent.entering(run.state).ended and not notify.get("result_claim"):
                self.on_run(run, RunEvent.entering(run.state))
            elif (run.state not in (RunState.PENDING_APPROVAL, RunState.RUNNING)
                  and notify.get("shown") != run.state.value):
                self.on_run(run, RunEvent.entering(run.state))

    def _claim(self, run_id: int, key: str, *also: str) -> Run | None:
        """Mark `key` in the run's notify under its row lock; None when it (or any of `also`) is already set."""
        return self.service.claim_notify(run_id, key, *also, claimant=self.name)

    def _claim_card(self, run_id: int) -> Run | None:
        """Exactly one process posts a run's card: the first to mark it in the row."""
        return self._claim(run_id, "card_claim", "card")

    def _post_card(self, run: Run) -> None:
        channel = self.approval_channel
        if run.source == "scheduler":  # scheduled runs (restore drills) report to the drills channel if any
            channel = self.service.directory.channels.get("drills") or channel
        if not channel:
            log.warning("no approvals channel (operators file channels.approvals or SLACK_APPROVAL_CHANNEL): "
                        "run %s has no Slack card", run.id)
            return
        claimed = self._claim_card(run.id)
        if claimed is None:
            return
        run = claimed
        msg = blocks.approval_card(run, self._runbook(run), self.mention)
        try:
            resp = self.client.chat_postMessage(channel=channel, text=msg.text, blocks=msg.blocks,
                                                unfurl_links=False, unfurl_media=False)
        except Exception:
            self.service.set_notify(run.id, {"card_claim": None})  # let a later attempt (adopt) retry
            raise
        ts, channel = str(resp["ts"]), str(resp.get("channel") or channel)
        self._live[run.id] = _Live(channel, ts)
        self.service.set_notify(run.id, {"card": {"channel": channel, "ts": ts}})
        origin = run.notify
        if origin.get("channel") and origin.get("user") and origin.get("channel") != channel:
            link = f"https://slack.com/archives/{channel}/p{ts.replace('.', '')}"
            try:
                self.client.chat_postEphemeral(
                    channel=str(origin["channel"]), user=str(origin["user"]),
                    text=f"Run {run.id} ({blocks.esc(run.runbook)}): approval card in <#{channel}>: <{link}|open it>",
                )
            except SlackApiError as e:
                log.info("could not tell the requester of run %s where the card is: %s", run.id,
                         e.response.get("error"))

    def _runbook(self, run: Run) -> Any:
        try:
            return self.service.runbook(run.runbook)
        except RunbookBotError:
            return None

    def _update_card(self, run: Run, card: tuple[str, str]) -> None:
        msg = blocks.approval_card(run, self._runbook(run), self.mention)
        self.client.chat_update(channel=card[0], ts=card[1], text=msg.text, blocks=msg.blocks)
        if run.notify.get("shown") != run.state.value:
            self.service.set_notify(run.id, {"shown": run.state.value})

    def _start_progress(self, run: Run, card: tuple[str, str]) -> None:
        if self._claim(run.id, "progress_claim") is None:
            return
        live = self._live.setdefault(run.id, _Live(*card))
        msg = blocks.progress_message(run.id, live.lines)
        resp = self.client.chat_postMessage(channel=card[0], thread_ts=card[1], text=msg.text, blocks=msg.blocks)
        live.progress_ts = str(resp["ts"])
        live.last_sent = time.monotonic()
        self.service.set_notify(run.id, {"progress_ts": live.progress_ts})

    def _handle_progress(self, run: Run, progress: Progress) -> None:
        live = self._live.get(run.id)
        if live is None:
            card = self._card(run)
            if card is None:
                return
            live = self._live[run.id] = _Live(*card, progress_ts=run.notify.get("progress_ts"))
        if progress.kind in ("ok", "skipped") and not progress.line:
            return
        live.lines.append(progress.line)
        del live.lines[:-blocks.PROGRESS_LINES]
        live.dirty = True

    def _flush_all(self, *, force: bool) -> None:
        now = time.monotonic()
        for run_id, live in list(self._live.items()):
            if live.dirty and live.progress_ts and (force or now - live.last_sent >= self.interval):
                self._send_progress(run_id, live, running=True)

    def _send_progress(self, run_id: int, live: _Live, *, running: bool) -> None:
        if live.progress_ts is None:
            return
        msg = blocks.progress_message(run_id, live.lines, running=running)
        try:
            self.client.chat_update(channel=live.channel, ts=live.progress_ts, text=msg.text, blocks=msg.blocks)
        except SlackApiError as e:
            log.warning("progress update of run %s failed: %s", run_id, e.response.get("error"))
        live.dirty = False
        live.last_sent = time.monotonic()

    def _finish(self, run: Run, card: tuple[str, str]) -> None:
        if self._claim(run.id, "result_claim") is None:
            return
        live = self._live.pop(run.id, None)
        if live is not None and live.progress_ts:
            self._send_progress(run.id, live, running=False)
        msg, overflow = blocks.result_message(run)
        self.client.chat_postMessage(channel=card[0], thread_ts=card[1], text=msg.text, blocks=msg.blocks)
        if overflow is not None:
            try:
                self.client.files_upload_v2(
                    channel=card[0], thread_ts=card[1], content=overflow, filename=f"run-{run.id}.txt",
                    title=f"Run {run.id} output",
                )
            except Exception as e:  # noqa: BLE001 - the message already points at `runbook-bot status`
                log.warning("uploading the output of run %s failed: %s", run.id, e)
