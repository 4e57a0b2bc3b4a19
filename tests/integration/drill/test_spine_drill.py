"""restore-drill through the spine: a scheduled fire runs unattended, and the evidence shows up in `drills`."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from bot.domain.runs import RunState
from bot.errors import PlanError
from bot.scheduler import check_staleness, fire_scheduled, latest_fire_time, metrics
from tests.support.drill import MARKER, BackedUpCluster, drill_vars, source_cluster
from tests.support.paths import ROOT
from tests.support.pgcluster import make_tmp_dir, remove_tree
from tests.support.spine import RealSpine, cli, drain, op

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def main_source() -> Iterator[BackedUpCluster]:
    """A source cluster whose stanza is `main`: the runbook's default, which a scheduled run uses."""
    with source_cluster("drill-main-", stanza="main", scale=1, incremental=False) as cluster:
        yield cluster


@pytest.fixture
def drill_inventory(main_source: BackedUpCluster) -> Iterator[Path]:
    """An environment (inventory dir) whose group_vars carry the drill host settings, as operators write them."""
    source = main_source
    base = make_tmp_dir("drill-inv-")
    inv = base / "inventory"
    shutil.copytree(ROOT / "inventory" / "local", inv)
    settings = drill_vars(source, base)
    settings.pop("target")
    with open(inv / "group_vars" / "all.yml", "a") as f:
        f.write("\n" + yaml.safe_dump(settings))
    yield inv
    remove_tree(base)


def test_scheduled_drill_runs_unattended_and_is_evidence(drill_inventory: Path, real_ctx: RealSpine) -> None:
    """The cron fire requests a preapproved run; it passes; drills lists its RTO and staleness clears."""
    ctx = real_ctx.build(RUNBOOK_BOT_INVENTORY=str(drill_inventory))
    assert any("restore-drill" in a for a in check_staleness(ctx))
    fire = latest_fire_time("0 4 * * 1", datetime.now(UTC))
    run_id = fire_scheduled(ctx, "restore-drill", fire)
    assert run_id is not None
    queued = ctx.service.get(run_id)
    assert (queued.state, queued.requested_by, queued.approvals_required) == (RunState.QUEUED, "scheduler", 0)
    [done] = drain(ctx)
    assert done.state is RunState.SUCCEEDED, done.error
    assert done.result["result"] == "PASS" and done.result["rto_seconds"] > 0
    assert done.summary[0].startswith("PASS restore drill")
    assert [a for a in check_staleness(ctx) if "restore-drill" in a] == []
    assert 'runbook_bot_drill_stale{runbook="restore-drill"} 0' in metrics(ctx)
    listed = json.loads(cli(real_ctx.env, "drills", "--json").stdout)
    assert [d["run_id"] for d in listed["drills"]] == [run_id]
    assert MARKER  # the drill's expectations included the marker row written before the backup


def test_restore_drill_argument_error_names_the_arguments(real_ctx: RealSpine) -> None:
    """validate_argument_spec's 'Validation of arguments failed:' keeps the argument names after it."""
    ctx = real_ctx.build()
    with pytest.raises(PlanError) as e:
        ctx.service.request("restore-drill", {}, op(ctx, "alice"))
    message = str(e.value)
    assert "Validation of arguments failed:" in message
    after = message.split("Validation of arguments failed:", 1)[1]
    assert "missing required arguments: scratch_dir" in after, message
