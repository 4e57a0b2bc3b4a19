"""What `worker` and `serve` print on their terminal: one line per run transition, and task progress.

bot.composition gives both the same two printers as the service's listeners, so `make run` shows what
a separate `runbook-bot worker` would: `[run 7] requested ...`, `[run 7] started ...`, task lines, the
outcome with its summary and error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TextIO

from bot.domain.runs import Run, RunEvent
from bot.execution.runner import Progress
from bot.text_views import approval_status, params_text

PROGRESS_KINDS = ("task", "changed", "failed", "unreachable", "play")


def progress_printer(out: TextIO) -> Callable[[Run, Progress], None]:
    lock = threading.Lock()

    def show(run: Run, p: Progress) -> None:
        if p.kind in PROGRESS_KINDS:
            with lock:
                out.write(f"[run {run.id}] {p.line}\n")
                out.flush()

    return show


def result_printer(out: TextIO) -> Callable[[Run, RunEvent], None]:
    lock = threading.Lock()

    def show(run: Run, event: RunEvent) -> None:
        if event is RunEvent.STARTED:
            line = f"[run {run.id}] started {run.runbook} {params_text(run.params)}"
        elif run.state.terminal:
            took = f" in {run.duration_seconds:.1f}s" if run.duration_seconds is not None else ""
            line = f"[run {run.id}] {run.state.value}{took}"
            for s in run.summary:
                line += f"\n[run {run.id}]   {s}"
            if run.error:
                line += f"\n[run {run.id}]   error: {run.error}"
        elif event is RunEvent.REQUESTED:
            line = f"[run {run.id}] requested {run.runbook} {params_text(run.params)} by {run.requested_by}: " \
                   f"{run.state.value}"
        elif event is RunEvent.QUEUED:
            line = f"[run {run.id}] approved by {', '.join(run.approvers) or 'nobody needed'}: queued"
        elif event is RunEvent.APPROVED:
            line = f"[run {run.id}] approved by {', '.join(run.approvers)}: {approval_status(run)}"
        else:  # cancel_requested
            line = f"[run {run.id}] {event.replace('_', ' ')}"
        with lock:
            out.write(line + "\n")
            out.flush()

    return show
