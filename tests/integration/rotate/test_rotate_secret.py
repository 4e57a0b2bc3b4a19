"""rotate_secret.yml end to end: moto Secrets Manager, real PostgreSQL roles, the fake kube API."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import ansible_runner
import pytest

from tests.fakes.kube_api import FakeKubeAPI
from tests.support.kube import deployment
from tests.support.paths import ROOT
from tests.support.playbooks import load_playbook_module
from tests.support.rotation import Scenario, failed_msgs

pytestmark = pytest.mark.slow


def test_single_user_rotates_password(scenario: Scenario) -> None:
    """single-user: the new password logs in, the old one no longer does, AWSPREVIOUS keeps the old."""
    s = scenario
    s.setup_db()
    s.create_secrets()
    run = s.run(s.extra(client_request_token="tok-single-user-1"))
    assert run.rc == 0, run.output
    cur = s.secret()
    assert cur["username"] == s.user and cur["password"] != s.canary
    assert s.can_login(s.user, cur["password"])
    assert not s.can_login(s.user, s.canary)
    assert s.secret("AWSPREVIOUS")["password"] == s.canary
    assert not any("AWSPENDING" in st for st in s.stages().values())
    assert failed_msgs(run) == []
    assert s.canary not in run.output and cur["password"] not in run.output


class Consumer:
    """A fake app pod's database session: connected as the current role until its Deployment restarts."""

    def __init__(self, s: Scenario, kube: FakeKubeAPI, namespace: str, name: str) -> None:
        self.s, self.kube, self.namespace, self.name = s, kube, namespace, name
        self.conn = s.login(s.user, s.canary)
        self.old_role_could_login_at_restart: bool | None = None
        self.new_conn: Any = None
        self.restarted = threading.Event()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _restarted(self) -> bool:
        dep = self.kube.get("Deployment", self.namespace, self.name) or {}
        ann = dep.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations") or {}
        return "kubectl.kubernetes.io/restartedAt" in ann

    def _watch(self) -> None:
        while not self._stop.is_set():
            if self._restarted():
                self.old_role_could_login_at_restart = self.s.can_login_flag(self.s.user)
                self.conn.close()
                new = self.s.secret()
                self.new_conn = self.s.login(new["username"], new["password"])
                self.restarted.set()
                return
            time.sleep(0.05)

    def start(self) -> Consumer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.conn.close()
        if self.new_conn is not None:
            self.new_conn.close()


@pytest.fixture
def k8s_scenario(scenario: Scenario, kube: FakeKubeAPI, kubeconfig: Path) -> Scenario:
    scenario.kubeconfig = kubeconfig
    kube.apply(deployment("api", namespace=scenario.db, replicas=1))
    return scenario


def alternating(s: Scenario, **kw: Any) -> dict[str, Any]:
    return s.extra(strategy="alternating-users", admin_secret_id=s.admin_secret_id, **kw)


def test_alternating_users_switches_role_and_retires_after_consumers_left(
    k8s_scenario: Scenario, kube: FakeKubeAPI
) -> None:
    """alternating-users: the secret moves to <user>_clone, the consumer restarts, then the old role is NOLOGIN."""
    s = k8s_scenario
    s.setup_db()
    s.create_secrets()
    consumer = Consumer(s, kube, s.db, "api").start()
    try:
        run = s.run(alternating(s, namespace=s.db, deployments="api", client_request_token="tok-alt-1"))
        assert run.rc == 0, run.output
        assert consumer.restarted.is_set()
        assert consumer.old_role_could_login_at_restart is True
    finally:
        consumer.stop()
    cur = s.secret()
    assert cur["username"] == f"{s.user}_clone"
    assert s.can_login(cur["username"], cur["password"])
    assert s.secret("AWSPREVIOUS") == s.creds(s.user, s.canary)
    assert not s.can_login_flag(s.user)
    assert not s.can_login(s.user, s.canary)
    stats = run.stats()
    assert stats["result"]["retired"] is True
    assert any(line.startswith("roll: ") for line in stats["summary"])
    assert s.canary not in run.output and cur["password"] not in run.output


def test_alternating_users_waits_for_old_sessions_then_resumes(k8s_scenario: Scenario) -> None:
    """A session of the old role that outlives the rollout stops the run before retiring; a rerun retires."""
    s = k8s_scenario
    s.setup_db()
    s.create_secrets()
    straggler = s.login(s.user, s.canary)
    extra = alternating(s, namespace=s.db, deployments="api", client_request_token="tok-alt-2", drain_timeout=10)
    try:
        run = s.run(extra)
        assert run.rc != 0
        msgs = " ".join(failed_msgs(run))
        assert f"session(s) of the previous role {s.user} remain" in msgs, msgs
        assert s.secret()["username"] == f"{s.user}_clone"
        assert s.can_login_flag(s.user)
    finally:
        straggler.close()
    rerun = s.run(extra)
    assert rerun.rc == 0, rerun.output
    assert not s.can_login_flag(s.user)
    assert len(s.stages()) == 2


def test_check_mode_reports_plan_and_changes_nothing(scenario: Scenario) -> None:
    """--check sets a deterministic `plan` naming each step and leaves secret and roles untouched."""
    s = scenario
    s.setup_db()
    s.create_secrets()
    before = (s.stages(), s.password_hash(s.user))
    extra = alternating(s, namespace="prod", deployments="api,worker")
    first, second = s.run(extra, check=True), s.run(extra, check=True)
    assert first.rc == 0, first.output
    plan = first.stats()["plan"]
    assert plan == second.stats()["plan"]
    assert plan[0].startswith(f"create: secret {s.secret_id}: switch role {s.user} -> {s.user}_clone")
    assert ("roll: restart deployment prod/worker (annotation kubectl.kubernetes.io/restartedAt) and wait for "
            "the rollout") in plan
    assert plan[-1] == f"retire: ALTER ROLE {s.user} NOLOGIN (AWSPREVIOUS keeps its credentials for a rollback)"
    assert (s.stages(), s.password_hash(s.user)) == before
    assert not s.role_exists(f"{s.user}_clone")


def test_pending_rotation_from_another_token_is_not_trampled(scenario: Scenario) -> None:
    """A version already AWSPENDING under another token is reported and left exactly as it was."""
    s = scenario
    s.setup_db()
    s.create_secrets()
    other = "other-rotation-token-0000000000000001"
    s.sm.put_secret_value(SecretId=s.secret_id, ClientRequestToken=other, VersionStages=["AWSPENDING"],
                          SecretString=json.dumps(s.creds(s.user, "someone-elses-pending-pw")))
    before = (s.stages(), s.password_hash(s.user))
    run = s.run(s.extra(client_request_token="tok-mine-1"))
    assert run.rc != 0
    msgs = " ".join(failed_msgs(run))
    assert "pending under another client request token" in msgs and other in msgs, msgs
    assert (s.stages(), s.password_hash(s.user)) == before
    assert s.secret("AWSPENDING")["password"] == "someone-elses-pending-pw"


def test_wrong_admin_credentials_fail_clearly_and_change_nothing(scenario: Scenario) -> None:
    """An admin secret PostgreSQL rejects stops the run at the preflight: no new version, no password change."""
    s = scenario
    s.setup_db()
    s.create_secrets(admin_password="not-the-admin-password")
    before = (s.stages(), s.password_hash(s.user))
    run = s.run(alternating(s, client_request_token="tok-bad-admin"))
    assert run.rc != 0
    msgs = " ".join(failed_msgs(run))
    assert f"cannot log in as admin (secret {s.admin_secret_id})" in msgs, msgs
    assert "password authentication failed" in msgs
    assert (s.stages(), s.password_hash(s.user)) == before
    assert not s.role_exists(f"{s.user}_clone")
    assert "not-the-admin-password" not in run.output


def test_rerun_after_set_failure_resumes_with_the_same_version(scenario: Scenario) -> None:
    """set fails when the admin lacks CREATEROLE; after granting it, a rerun reuses the pending version."""
    s = scenario
    s.setup_db()
    s.create_secrets()
    s.pg.psql(f"ALTER ROLE {s.admin} NOCREATEROLE")
    token = "tok-set-failure-000000000000000000001"
    run = s.run(alternating(s, client_request_token=token))
    assert run.rc != 0
    msgs = " ".join(failed_msgs(run))
    assert f"set: cannot set the password of role {s.user}_clone" in msgs, msgs
    assert s.stages()[token] == ["AWSPENDING"]
    pending = s.secret("AWSPENDING")
    assert s.secret()["password"] == s.canary
    s.pg.psql(f"ALTER ROLE {s.admin} CREATEROLE")
    rerun = s.run(alternating(s, client_request_token=token))
    assert rerun.rc == 0, rerun.output
    assert s.stages() == {token: ["AWSCURRENT"], **{v: ["AWSPREVIOUS"] for v in s.stages() if v != token}}
    assert len(s.stages()) == 2
    assert s.secret() == pending
    assert s.can_login(pending["username"], pending["password"])


def test_rerun_after_test_failure_resumes(scenario: Scenario) -> None:
    """test fails when the app's table is missing (nothing finished); once it exists a rerun completes."""
    s = scenario
    s.setup_db(table=False)
    s.create_secrets()
    token = "tok-test-failure-00000000000000000001"
    run = s.run(s.extra(client_request_token=token))
    assert run.rc != 0
    msgs = " ".join(failed_msgs(run))
    assert f"test: test as {s.user} failed (SELECT from orders)" in msgs and "does not exist" in msgs, msgs
    assert s.secret()["password"] == s.canary
    assert s.stages()[token] == ["AWSPENDING"]
    s.create_table()
    rerun = s.run(s.extra(client_request_token=token))
    assert rerun.rc == 0, rerun.output
    assert s.stages()[token] == ["AWSCURRENT"]
    assert s.can_login(s.user, s.secret()["password"])


def test_rerun_after_create_resumes(scenario: Scenario) -> None:
    """The create step repeated with one token stages one version; the playbook then resumes from it."""
    s = scenario
    s.setup_db()
    s.create_secrets()
    token = "tok-create-0000000000000000000000001"
    args = json.dumps({"step": "create", "secret_id": s.secret_id, "kind": "postgres-role", "token": token})
    for _ in range(2):
        adhoc = s.adhoc(args)
        assert adhoc.rc == 0, adhoc.output
    assert s.stages()[token] == ["AWSPENDING"]
    pending = s.secret("AWSPENDING")
    extra = s.extra(client_request_token=token, test_query="SELECT count(*) FROM orders")
    del extra["test_table"]
    run = s.run(extra)
    assert run.rc == 0, run.output
    assert len(s.stages()) == 2 and s.secret() == pending


def test_rerun_after_consumer_roll_failure_resumes(k8s_scenario: Scenario) -> None:
    """A missing consumer Deployment fails the run after finish without retiring; a fixed rerun retires."""
    s = k8s_scenario
    s.setup_db()
    s.create_secrets()
    token = "tok-roll-failure-00000000000000000001"
    run = s.run(alternating(s, namespace=s.db, deployments="api,worker", client_request_token=token))
    assert run.rc != 0
    assert any(f"Deployment {s.db}/worker not found" in m for m in failed_msgs(run)), failed_msgs(run)
    assert s.stages()[token] == ["AWSCURRENT"]
    assert s.can_login_flag(s.user)
    rerun = s.run(alternating(s, namespace=s.db, deployments="api", client_request_token=token))
    assert rerun.rc == 0, rerun.output
    assert not s.can_login_flag(s.user)


def test_api_key_rotation_runs_provider_hook(scenario: Scenario) -> None:
    """api-key: a new key becomes AWSCURRENT, the hook runs at set/test/retire, the generated token is printed."""
    s = scenario
    s.sm.create_secret(Name=s.secret_id, SecretString=s.canary)
    log = s.tmp / "hook.log"
    hook = s.tmp / "hook.yml"
    hook.write_text(
        "- name: Record the hook call\n"
        "  ansible.builtin.lineinfile:\n"
        "    path: '{{ hook_log }}'\n"
        "    line: '{{ rotation_step }} {{ rotation_token }}'\n"
        "    create: true\n"
        "    mode: '0600'\n"
    )
    run = s.run({"secret_id": s.secret_id, "kind": "api-key", "api_key_provider_tasks": str(hook),
                 "hook_log": str(log)})
    assert run.rc == 0, run.output
    stages = s.stages()
    token = next(v for v, st in stages.items() if "AWSCURRENT" in st)
    assert f"client_request_token={token}" in run.stdout
    assert log.read_text().split("\n")[:3] == [f"set {token}", f"test {token}", f"retire {token}"]
    new = s.sm.get_secret_value(SecretId=s.secret_id, VersionStage="AWSCURRENT")["SecretString"]
    assert len(new) == 40 and new != s.canary
    assert s.sm.get_secret_value(SecretId=s.secret_id, VersionStage="AWSPREVIOUS")["SecretString"] == s.canary
    assert s.canary not in run.output and new not in run.output


def test_canary_never_reaches_runner_artifacts(scenario: Scenario) -> None:
    """Through ansible_runner (as the spine runs it, -vvv), neither the old nor the new password is in any artifact."""
    s = scenario
    s.setup_db()
    s.create_secrets()
    pdd = s.tmp / "runner"
    (pdd / "env").mkdir(parents=True)
    # As the spine writes them: every string value tagged !unsafe (inert to templating).
    extravars = {**alternating(s), "runbook_run_id": "4242", "runbook_name": "rotate-secret"}
    (pdd / "env" / "extravars").write_text(
        "".join(f"{k}: !unsafe {json.dumps(v)}\n" for k, v in extravars.items())
    )
    venv_bin = str(Path(sys.executable).parent)
    result = ansible_runner.run(
        private_data_dir=str(pdd),
        project_dir=str(ROOT / "playbooks"),
        playbook=str(ROOT / "playbooks" / "rotate_secret.yml"),
        inventory=str(ROOT / "inventory" / "local"),
        envvars={**s.env, "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}"},
        verbosity=3,
        quiet=True,
    )
    assert result.status == "successful", result.stdout.read()
    new = s.secret()
    assert new["username"] == f"{s.user}_clone" and new["password"] != s.canary
    files = [p for p in (pdd / "artifacts").rglob("*") if p.is_file()]
    events = [p for p in files if p.parent.name == "job_events"]
    assert len(events) > 20
    blob = b"\n".join(p.read_bytes() for p in files)
    assert b"secret_rotation" in blob
    token = load_playbook_module("library/secret_rotation.py").normalize_token("runbook-bot-run-4242")
    assert s.stages()[token] == ["AWSCURRENT"]
    for value in (s.canary, new["password"], s.admin_password):
        assert value.encode() not in blob


def test_alternating_twice_flips_back_and_rerun_of_done_rotation_is_a_no_op(scenario: Scenario) -> None:
    """A finished rotation rerun with its token changes nothing; the next rotation returns to the first role."""
    s = scenario
    s.setup_db()
    s.create_secrets()
    assert s.run(alternating(s, client_request_token="tok-flip-a")).rc == 0
    first = (s.stages(), s.secret(), s.password_hash(f"{s.user}_clone"))
    again = s.run(alternating(s, client_request_token="tok-flip-a"))
    assert again.rc == 0, again.output
    assert (s.stages(), s.secret(), s.password_hash(f"{s.user}_clone")) == first
    back = s.run(alternating(s, client_request_token="tok-flip-b"))
    assert back.rc == 0, back.output
    cur = s.secret()
    assert cur["username"] == s.user and cur["password"] != s.canary
    assert s.can_login(s.user, cur["password"])
    assert not s.can_login_flag(f"{s.user}_clone")
    assert s.secret("AWSPREVIOUS") == first[1]


def test_rerun_after_interrupted_finish_resumes(scenario: Scenario) -> None:
    """Interrupted between finish's two stage moves (AWSCURRENT moved, AWSPENDING left), a rerun completes it."""
    s = scenario
    s.setup_db()
    s.create_secrets()
    token = "tok-finish-0000000000000000000000001"
    for step in ("create", "set", "test"):
        args = {"step": step, "secret_id": s.secret_id, "kind": "postgres-role", "token": token,
                "test_table": "orders"}
        adhoc = s.adhoc(json.dumps(args))
        assert adhoc.rc == 0, adhoc.output
    old_version = next(v for v, st in s.stages().items() if "AWSCURRENT" in st)
    s.sm.update_secret_version_stage(SecretId=s.secret_id, VersionStage="AWSCURRENT", MoveToVersionId=token,
                                     RemoveFromVersionId=old_version)
    assert sorted(s.stages()[token]) == ["AWSCURRENT", "AWSPENDING"]
    run = s.run(s.extra(client_request_token=token))
    assert run.rc == 0, run.output
    assert s.stages() == {token: ["AWSCURRENT"], old_version: ["AWSPREVIOUS"]}
    assert s.can_login(s.user, s.secret()["password"])
