"""Errors a newcomer hits say their cause: a run that fails while being prepared names the path and why
(the runbooks' own error causes are tested in their feature dirs)."""

from __future__ import annotations

import shutil

import pytest

from bot.domain.runs import RunState
from bot.spine import Spine
from tests.support.spine import drain, op

pytestmark = pytest.mark.slow


def test_unwritable_work_dir_fails_the_run_naming_the_path(ctx: Spine) -> None:
    """An OSError while preparing a run (work dir gone bad, disk full) fails it with the path and why."""
    work = ctx.settings.work_dir
    shutil.rmtree(work)
    work.write_text("not a directory")
    res = ctx.service.request("hasty", {"seconds": "0"}, op(ctx, "alice"))
    [run] = drain(ctx)
    assert run.id == res.run.id and run.state is RunState.FAILED
    assert run.error is not None and str(work) in run.error and "Not a directory" in run.error
    assert "internal error" not in run.error
