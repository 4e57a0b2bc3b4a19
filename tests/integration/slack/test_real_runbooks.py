"""Shipped runbooks through Slack: the real catalog behind `serve`, the fakes only at the wire."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.kube_api import FakeKubeAPI
from tests.fakes.slack_api import FakeSlack
from tests.support.kube import deployment, rolled_out, set_image
from tests.support.paths import ROOT
from tests.support.rotation import Scenario
from tests.support.slack_bot import Bot, card_ts, running_bot

pytestmark = pytest.mark.slow

OPERATORS = """\
operators:
  alice: {slack: U0ALICE}
  bob: {slack: U0BOB}
  carol: {slack: U0CAROL}
groups:
  sre: [alice, bob]
  dba: [carol]
  security: [alice, bob, carol]
channels:
  approvals: C0APPROVALS
"""


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as fake:
        yield fake


def _serve_real(tmp_path: Path, database_url: str, kube: FakeKubeAPI, extra: dict[str, str]) -> Iterator[Bot]:
    operators = tmp_path / "operators.yaml"
    operators.write_text(OPERATORS)
    config = kube.kubeconfig(tmp_path / "kubeconfig")
    with running_bot(tmp_path, database_url, FakeSlack().start(), extra_env={
        "RUNBOOK_BOT_RUNBOOKS": str(ROOT / "runbooks"), "RUNBOOK_BOT_PLAYBOOKS": str(ROOT / "playbooks"),
        "RUNBOOK_BOT_CONFIG": str(operators), "KUBECONFIG": str(config), "K8S_AUTH_KUBECONFIG": str(config),
        **extra,
    }) as running:
        yield running


@pytest.fixture
def real_bot(tmp_path: Path, database_url: str, kube: FakeKubeAPI) -> Iterator[Bot]:
    """`serve` over the shipped runbooks and playbooks, Kubernetes and Slack faked at the wire."""
    yield from _serve_real(tmp_path, database_url, kube, {})


@pytest.fixture
def aws_bot(tmp_path: Path, database_url: str, kube: FakeKubeAPI,
            aws_env: dict[str, str]) -> Iterator[Bot]:
    """The same, with AWS (moto's server) in the environment the playbooks inherit."""
    yield from _serve_real(tmp_path, database_url, kube, aws_env)


def test_scale_workers_from_slack(real_bot: Bot, kube: FakeKubeAPI) -> None:
    """/runbook run scale-workers shows the check-mode plan on the card, and the approved run scales."""
    kube.apply(deployment("temporal-worker", "worker:1.0", replicas=3))
    run_id = real_bot.request("U0ALICE", "run scale-workers namespace=prod deployment=temporal-worker replicas=5")
    card = real_bot.card_for(run_id)
    assert "replicas 3 -&gt; 5" in json.dumps(card["blocks"]) or "replicas 3 -> 5" in json.dumps(card["blocks"])
    real_bot.sender.click("U0BOB", "runbook_approve", run_id, message_ts=card_ts(real_bot, run_id))
    ts = card_ts(real_bot, run_id)
    real_bot.slack.wait_for(lambda: [m for m in real_bot.thread_messages(ts) if "succeeded" in str(m.get("text"))],
                            what="the result message", timeout=120)
    dep = kube.get("Deployment", "prod", "temporal-worker")
    assert dep is not None and dep["spec"]["replicas"] == 5


def test_rotate_secret_from_slack_needs_two_and_leaks_nothing(aws_bot: Bot, scenario: Scenario) -> None:
    """Two security approvers from Slack rotate the secret; neither password ever reaches Slack or the logs."""
    s = scenario
    s.setup_db()
    s.create_secrets()
    text = f"run rotate-secret secret_id={s.secret_id} kind=postgres-role test_table=orders"
    run_id = aws_bot.request("U0ALICE", text)
    aws_bot.card_for(run_id)
    aws_bot.sender.click("U0BOB", "runbook_approve", run_id, message_ts=card_ts(aws_bot, run_id))
    aws_bot.slack.wait_for(lambda: "1 of 2" in json.dumps(aws_bot.updates_of(card_ts(aws_bot, run_id))),
                           what="quorum progress on the card")
    aws_bot.sender.click("U0CAROL", "runbook_approve", run_id, message_ts=card_ts(aws_bot, run_id))
    ts = card_ts(aws_bot, run_id)
    aws_bot.slack.wait_for(lambda: [m for m in aws_bot.thread_messages(ts) if "succeeded" in str(m.get("text"))],
                           what="the result message", timeout=180)
    new = s.secret()["password"]
    assert s.can_login(s.user, new) and not s.can_login(s.user, s.canary)
    seen = aws_bot.slack.recorded_text() + "".join(aws_bot.output)
    assert s.canary not in seen and new not in seen and s.admin_password not in seen


def test_rollout_undo_from_slack(real_bot: Bot, kube: FakeKubeAPI) -> None:
    """The card shows the image change the undo will make; after approval the previous image is back."""
    kube.apply(deployment("api", "api:1"))
    kube.wait_until(lambda: rolled_out(kube, "prod", "api"))
    set_image(kube, "prod", "api", "api:2")
    kube.wait_until(lambda: rolled_out(kube, "prod", "api"))
    run_id = real_bot.request("U0ALICE", "run rollout-undo namespace=prod deployment=api")
    card = json.dumps(real_bot.card_for(run_id)["blocks"])
    assert "api:2" in card and "api:1" in card
    real_bot.sender.click("U0BOB", "runbook_approve", run_id, message_ts=card_ts(real_bot, run_id))
    ts = card_ts(real_bot, run_id)
    real_bot.slack.wait_for(lambda: [m for m in real_bot.thread_messages(ts) if "succeeded" in str(m.get("text"))],
                            what="the result message", timeout=120)
    dep = kube.get("Deployment", "prod", "api")
    assert dep is not None and dep["spec"]["template"]["spec"]["containers"][0]["image"] == "api:1"
