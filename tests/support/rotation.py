"""Shared fixtures for rotate-secret tests (a pytest plugin, registered in tests/conftest.py): moto in server
mode (Secrets Manager), a real PostgreSQL 15 cluster, and a Scenario per test that sets up roles and secrets
and runs playbooks/rotate_secret.yml for real.

boto3 and moto are imported when a fixture needs them, so other tests do not pay for them."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.paths import ROOT
from tests.support.pgcluster import PgCluster, free_port, make_tmp_dir, remove_tree

PLAYBOOK = ROOT / "playbooks" / "rotate_secret.yml"
REGION = "us-east-1"
_seq = itertools.count(1)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A moto server (Secrets Manager and the rest of AWS) on 127.0.0.1."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def aws_env(moto_endpoint: str) -> dict[str, str]:
    """Environment for the playbook subprocess: dummy credentials + the standard AWS_ENDPOINT_URL."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": moto_endpoint,
    }


@pytest.fixture(scope="module")
def sm(aws_env: dict[str, str]) -> Any:
    """A boto3 Secrets Manager client on the moto server."""
    import boto3

    return boto3.client(
        "secretsmanager",
        region_name=REGION,
        endpoint_url=aws_env["AWS_ENDPOINT_URL"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    """A real PostgreSQL 15 cluster (TCP 127.0.0.1, scram passwords)."""
    base = make_tmp_dir("rotate-pg-")
    cluster = PgCluster(base).start()
    yield cluster
    cluster.stop()
    remove_tree(base)


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def stats(self) -> dict[str, Any]:
        """The set_stats data (custom stats) printed by the json callback."""
        return dict(json.loads(self.stdout).get("global_custom_stats", {}))


@dataclass
class Scenario:
    """One test's world: a database with an app table, roles, secrets, and a way to run the playbook."""

    pg: PgCluster
    sm: Any
    env: dict[str, str]
    tmp: Path
    n: int = field(default_factory=lambda: next(_seq))
    kubeconfig: Path | None = None

    def __post_init__(self) -> None:
        self.db = f"shop{self.n}"
        self.user = f"app{self.n}"
        self.admin = f"admin{self.n}"
        self.secret_id = f"prod/app{self.n}/db"
        self.admin_secret_id = f"prod/admin{self.n}/db"
        self.canary = f"CANARY-{uuid.uuid4().hex}"
        self.admin_password = f"adminpw-{uuid.uuid4().hex}"

    # ---- setup ----
    def setup_db(self, *, table: bool = True, clone: bool = False) -> None:
        p = self.pg
        p.psql(f"CREATE ROLE {self.admin} LOGIN CREATEROLE PASSWORD '{self.admin_password}'")
        p.psql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.canary}'")
        p.psql(f"CREATE DATABASE {self.db} OWNER {self.user}")
        p.psql(f"GRANT {self.user} TO {self.admin} WITH ADMIN OPTION")
        if table:
            self.create_table()
        if clone:
            p.psql(f"CREATE ROLE {self.user}_clone LOGIN PASSWORD 'unknown-{uuid.uuid4().hex}' IN ROLE {self.user}")

    def create_table(self) -> None:
        self.pg.psql(
            f"SET ROLE {self.user}; CREATE TABLE orders (id int primary key); INSERT INTO orders VALUES (1)",
            dbname=self.db,
        )

    def creds(self, username: str, password: str) -> dict[str, Any]:
        return {"username": username, "password": password, "host": "127.0.0.1", "port": self.pg.port,
                "dbname": self.db, "engine": "postgres"}

    def create_secrets(self, *, admin_password: str | None = None) -> None:
        self.sm.create_secret(Name=self.secret_id, SecretString=json.dumps(self.creds(self.user, self.canary)))
        self.sm.create_secret(
            Name=self.admin_secret_id,
            SecretString=json.dumps({"username": self.admin, "password": admin_password or self.admin_password}),
        )

    # ---- observation ----
    def secret(self, stage: str = "AWSCURRENT") -> dict[str, Any]:
        resp = self.sm.get_secret_value(SecretId=self.secret_id, VersionStage=stage)
        return dict(json.loads(resp["SecretString"]))

    def stages(self) -> dict[str, list[str]]:
        return dict(self.sm.describe_secret(SecretId=self.secret_id)["VersionIdsToStages"])

    def login(self, username: str, password: str) -> psycopg.Connection[Any]:
        return psycopg.connect(host="127.0.0.1", port=self.pg.port, dbname=self.db, user=username,
                               password=password, connect_timeout=5, autocommit=True)

    def can_login(self, username: str, password: str) -> bool:
        try:
            self.login(username, password).close()
            return True
        except psycopg.OperationalError:
            return False

    # Role names below are the scenario's own identifiers (app<n>, admin<n>), never outside input.
    def can_login_flag(self, role: str) -> bool:
        return self.pg.psql(f"SELECT rolcanlogin FROM pg_roles WHERE rolname = '{role}'").strip() == "t"

    def role_exists(self, role: str) -> bool:
        return self.pg.psql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{role}'").strip() == "1"

    def password_hash(self, role: str) -> str:
        return self.pg.psql(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'").strip()

    # ---- running ----
    def extra(self, **kw: Any) -> dict[str, Any]:
        base: dict[str, Any] = {"secret_id": self.secret_id, "kind": "postgres-role", "test_table": "orders"}
        base.update(kw)
        return base

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_", "K8S_AUTH"))}
        env.update(self.env, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
        if self.kubeconfig:
            env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def adhoc(self, args_json: str) -> Run:
        """One secret_rotation module call through `ansible localhost -m` (args as JSON, no shell)."""
        argv = [str(Path(sys.executable).parent / "ansible"), "-i", "inventory/local", "localhost",
                "-m", "secret_rotation", "-a", args_json]
        proc = subprocess.run(argv, cwd=ROOT, env=self._env(), capture_output=True, text=True, timeout=120)
        return Run(proc.returncode, proc.stdout, proc.stderr)

    def run(self, extra: dict[str, Any], *, check: bool = False, verbose: bool = False) -> Run:
        """ansible-playbook as a subprocess (json callback), extra vars from a file, never a shell string."""
        vars_file = self.tmp / f"extra-{uuid.uuid4().hex}.json"
        vars_file.write_text(json.dumps(extra))
        env = self._env()
        env.update(ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_SHOW_CUSTOM_STATS="1")
        argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "inventory/local", str(PLAYBOOK),
                "-e", f"@{vars_file}"]
        if check:
            argv.append("--check")
        if verbose:
            argv.append("-vvv")
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
        return Run(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def scenario(pg: PgCluster, sm: Any, aws_env: dict[str, str]) -> Iterator[Scenario]:
    tmp = make_tmp_dir("rotate-run-")
    yield Scenario(pg, sm, aws_env, tmp)
    remove_tree(tmp)


def failed_msgs(run: Run) -> list[str]:
    """Messages of the failed tasks in a json-callback run."""
    out: list[str] = []
    for play in json.loads(run.stdout).get("plays", []):
        for task in play.get("tasks", []):
            for res in task.get("hosts", {}).values():
                items = [r for r in res.get("results", []) if isinstance(r, dict) and r.get("failed")]
                out.extend(str(r.get("msg", "")) for r in items)
                if res.get("failed") and not items:
                    out.append(str(res.get("msg", "")))
    return out
