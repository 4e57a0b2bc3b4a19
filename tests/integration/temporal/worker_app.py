"""A real Temporal worker for the reset-stuck-workflows tests, run as its own process.

    python -m tests.integration.temporal.worker_app --address 127.0.0.1:P --task-queue Q --flag-dir D

Workflows take a flag name; the flag is "up" when the file D/<flag> exists (the test creates it to
"deploy the fix"):
- ChargeOrder: one activity that fails ("payment gateway unavailable") until the flag is up: stuck, with
  the pending activity's attempt growing.
- WaitForApproval: a healthy workflow; a successful activity, then it waits for the `finish` signal.
- BrokenDecider: a successful activity, then workflow code that raises until the flag is up: a failing
  workflow task.
- ChargeWithReceipt: starts a child (WaitForApproval), then is stuck like ChargeOrder.
Prints "ready" on stdout once polling, runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

FAST_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=100),
    backoff_coefficient=1.0,
    maximum_interval=timedelta(milliseconds=200),
)
# In the environment, not a module global: the workflow sandbox re-imports this module per run.
FLAG_DIR_ENV = "RESET_TEST_FLAG_DIR"


def flag_up(flag: str) -> bool:
    return os.path.exists(os.path.join(os.environ[FLAG_DIR_ENV], flag))


@activity.defn
async def charge(flag: str) -> str:
    if not flag_up(flag):
        raise RuntimeError("payment gateway unavailable")
    return f"charged {flag}"


@activity.defn
async def ping(name: str) -> str:
    return f"pong {name}"


@workflow.defn
class ChargeOrder:
    @workflow.run
    async def run(self, flag: str) -> str:
        return await workflow.execute_activity(
            charge, flag, start_to_close_timeout=timedelta(seconds=10), retry_policy=FAST_RETRY
        )


@workflow.defn
class WaitForApproval:
    def __init__(self) -> None:
        self.finished = False

    @workflow.signal
    def finish(self) -> None:
        self.finished = True

    @workflow.run
    async def run(self, name: str) -> str:
        await workflow.execute_activity(ping, name, start_to_close_timeout=timedelta(seconds=10))
        await workflow.wait_condition(lambda: self.finished)
        return f"approved {name}"


@workflow.defn
class BrokenDecider:
    @workflow.run
    async def run(self, flag: str) -> str:
        await workflow.execute_activity(ping, flag, start_to_close_timeout=timedelta(seconds=10))
        with workflow.unsafe.sandbox_unrestricted():
            up = flag_up(flag)
        if not up:
            # Not an ApplicationError: the Python SDK fails the workflow task (retried), not the workflow.
            raise RuntimeError("decider bug: cannot parse order")
        return f"decided {flag}"


@workflow.defn
class ChargeWithReceipt:
    @workflow.run
    async def run(self, flag: str) -> str:
        # A pending child: the test server refuses to reset past it (history.allowResetWithPendingChildren
        # is false there), which makes a real per-workflow reset failure.
        await workflow.start_child_workflow(
            WaitForApproval.run,
            flag,
            id=f"{workflow.info().workflow_id}-receipt",
            task_queue=workflow.info().task_queue,
        )
        return await workflow.execute_activity(
            charge, flag, start_to_close_timeout=timedelta(seconds=10), retry_policy=FAST_RETRY
        )


async def serve(address: str, task_queue: str) -> None:
    client = await Client.connect(address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[ChargeOrder, WaitForApproval, BrokenDecider, ChargeWithReceipt],
        activities=[charge, ping],
    ):
        print("ready", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--flag-dir", required=True)
    args = parser.parse_args()
    os.environ[FLAG_DIR_ENV] = args.flag_dir
    asyncio.run(serve(args.address, args.task_queue))


if __name__ == "__main__":
    main()
