#!/usr/bin/python
# Copyright: runbook-bot contributors
# Apache-2.0
"""Ansible module: one step of AWS Secrets Manager's rotation contract, run without Lambda."""

from __future__ import annotations

import json
import re
import secrets
import string
import time
import uuid
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.runbook_module import OperatorError, dispatch

try:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    HAS_BOTO3 = True
except ImportError:  # pragma: no cover - reported through fail_json
    HAS_BOTO3 = False

try:
    import psycopg
    from psycopg import sql

    HAS_PSYCOPG = True
except ImportError:  # pragma: no cover
    HAS_PSYCOPG = False

DOCUMENTATION = r"""
---
module: secret_rotation
short_description: Run one step of an AWS Secrets Manager rotation (create, set, test, finish) without Lambda
description:
  - Implements the four steps of the AWS Secrets Manager rotation contract (C(create), C(set), C(test),
    C(finish)) as separate, idempotent calls keyed by a client request token, plus the read-only C(status)
    preflight and the consumer-switch steps C(prove) and C(retire).
  - Every step is safe to repeat with the same token; a rerun after a failure resumes where it stopped.
  - A rotation pending under another token is reported and never overwritten.
  - Secret values are read and written by the module itself; they are never options and never results.
    Every value the module loads is registered as a no_log value, so Ansible scrubs it from any output.
  - The AWS endpoint comes from boto3's standard environment (C(AWS_ENDPOINT_URL), credentials chain).
  - C(get_secret_value) is always called with an explicit C(VersionStage) (moto returns a stale value
    without it after a stage move; it is also the documented way on AWS).
options:
  step:
    description:
      - C(status) is read-only (runs in check mode) and checks the admin/current credentials.
      - C(create) stages a new value as C(AWSPENDING) under I(token), or reuses the one already there.
      - C(set) applies the pending value to the database (C(postgres-role)); a no-op for C(api-key).
      - C(test) logs in with the pending value and runs a real read query.
      - C(finish) moves C(AWSCURRENT) to the new version (C(AWSPREVIOUS) keeps the old) and drops
        C(AWSPENDING).
      - C(prove) polls C(pg_stat_activity) until no session of the previous role remains (alternating-users).
      - C(retire) makes the previous role C(NOLOGIN) (alternating-users) once no session of it remains.
    type: str
    required: true
    choices: [status, create, set, test, finish, prove, retire]
  secret_id:
    description: Name or ARN of the secret to rotate.
    type: str
    required: true
  token:
    description:
      - Client request token that names the new version (32 to 64 characters of C([A-Za-z0-9-_]));
        any other non-empty string is mapped deterministically to a UUID (uuid5).
      - Required by every step except C(status), which generates one when empty and returns it.
    type: str
    default: ""
  kind:
    description: What the secret holds.
    type: str
    required: true
    choices: [postgres-role, api-key]
  strategy:
    description:
      - For C(postgres-role). C(single-user) changes the password of the one role.
        C(alternating-users) (the AWS multi-user template) switches between two roles; the pending version
        uses the other role (the secret's C(alternate_username), else C(<user>_clone) or the name without
        C(_clone)), whose password is reset with the admin credentials.
    type: str
    default: single-user
    choices: [single-user, alternating-users]
  admin_secret_id:
    description:
      - Secret holding admin credentials (C(username), C(password); C(host), C(port), C(dbname) default to
        the rotated secret's). Required for C(alternating-users) unless the secret has C(masterarn).
      - For C(single-user) optional; without it the role changes its own password with its current one.
    type: str
  test_table:
    description: Table (C(name) or C(schema.name)) the application reads; C(test) selects from it.
    type: str
  test_query:
    description: Read-only query run by C(test) instead of the default select from I(test_table).
    type: str
  drain_timeout:
    description: Seconds C(prove) waits for the previous role's sessions to end.
    type: int
    default: 300
  poll_interval:
    description: Seconds between C(pg_stat_activity) polls in C(prove).
    type: float
    default: 2.0
  password_length:
    description: Length of generated passwords.
    type: int
    default: 32
  api_key_length:
    description: Length of generated API keys (C(api-key)).
    type: int
    default: 40
  api_key_field:
    description: Field that holds the key when the C(api-key) secret is a JSON object.
    type: str
    default: api_key
  region:
    description: AWS region; default from the environment.
    type: str
  connect_timeout:
    description: PostgreSQL connect timeout in seconds.
    type: int
    default: 10
requirements: [boto3, psycopg>=3.1]
author: runbook-bot
notes:
  - Passwords are sent to PostgreSQL as SCRAM verifiers computed by libpq (like psql's \password), so the
    plaintext never appears in server logs or pg_stat_statements.
"""

EXAMPLES = r"""
- name: Stage a new value
  secret_rotation:
    step: create
    secret_id: prod/app/db
    kind: postgres-role
    strategy: alternating-users
    admin_secret_id: prod/db/admin
    token: "{{ rotation_token }}"
  no_log: true
"""

RETURN = r"""
token:
  description: The client request token used (generated by C(status) when none was given).
  type: str
  returned: always
phase:
  description: C(new) (no version for the token), C(pending), C(finished) or C(superseded).
  type: str
  returned: always
foreign_pending:
  description: Version ids staged AWSPENDING under another token (a rotation in progress elsewhere).
  type: list
  elements: str
  returned: always
old_username:
  description: Role the consumers use before the rotation (postgres-role).
  type: str
  returned: when kind is postgres-role
new_username:
  description: Role the consumers use after the rotation (postgres-role).
  type: str
  returned: when kind is postgres-role
endpoint:
  description: C(host:port/dbname) of the database (postgres-role).
  type: str
  returned: when kind is postgres-role
sessions:
  description: Sessions of the previous role seen by C(prove)/C(retire) (pid, client address, application).
  type: list
  elements: dict
  returned: for prove and retire
step_ok:
  description: True when the step succeeded (lets a no_log task tell success from a module crash).
  type: bool
  returned: on success
error:
  description: Scrubbed error message (also in C(msg)).
  type: str
  returned: on failure
"""

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{32,64}$")
TOKEN_NAMESPACE = uuid.UUID("6f2c54d0-54a1-4d0b-9a07-5c3bb7e2d5a1")
PG_KEYS = ("username", "password", "host", "port", "dbname")
APP_NAME = "runbook-bot-rotate-secret"


def normalize_token(raw: str) -> str:
    raw = raw.strip()
    if TOKEN_RE.match(raw):
        return raw
    return str(uuid.uuid5(TOKEN_NAMESPACE, raw))


def gen_password(length: int) -> str:
    alphabet = string.ascii_letters + string.digits
    while True:
        pw = "".join(secrets.choice(alphabet) for _ in range(length))
        if any(c.isdigit() for c in pw) and any(c.islower() for c in pw) and any(c.isupper() for c in pw):
            return pw


def alternate_username(current: dict[str, Any]) -> str:
    """The other role of an alternating pair (AWS multi-user template naming, or `alternate_username`)."""
    if current.get("alternate_username"):
        return str(current["alternate_username"])
    user = str(current["username"])
    if user.endswith("_clone"):
        return user[: -len("_clone")]
    return user + "_clone"


class Rotation:
    def __init__(self, module: AnsibleModule) -> None:
        self.m = module
        self.p = module.params
        self.sm = boto3.client("secretsmanager", region_name=self.p["region"] or None)
        self.token = ""

    # ---------- secrets manager helpers ----------

    def _aws(self, what: str, fn: Any, **kw: Any) -> Any:
        try:
            return fn(**kw)
        except ClientError as e:
            err = e.response.get("Error", {})
            raise OperatorError(f"AWS {what} failed: {err.get('Code', '?')}: {err.get('Message', '')}") from None
        except BotoCoreError as e:
            raise OperatorError(f"AWS {what} failed: {e}") from None

    def hide(self, value: Any) -> None:
        """Register the secret fields of a loaded secret (passwords, keys) as no_log values.

        Only those: no_log values are masked as substrings everywhere, so registering a username such
        as "app" would mangle every message.
        """
        if isinstance(value, dict):
            for k, v in value.items():
                if k in ("password", "api_key", self.p["api_key_field"]) and isinstance(v, str) and v:
                    self.m.no_log_values.add(v)

    def describe(self, secret_id: str) -> dict[str, Any]:
        return self._aws("DescribeSecret", self.sm.describe_secret, SecretId=secret_id)  # type: ignore[no-any-return]

    def get_value(self, secret_id: str, stage: str, version_id: str | None = None) -> str:
        kw: dict[str, Any] = {"SecretId": secret_id, "VersionStage": stage}
        if version_id:
            kw["VersionId"] = version_id
        resp = self._aws(f"GetSecretValue({stage})", self.sm.get_secret_value, **kw)
        value = resp.get("SecretString")
        if value is None:
            raise OperatorError(f"secret {secret_id} {stage} has no SecretString (binary secrets unsupported)")
        self.m.no_log_values.add(value)
        return str(value)

    def parse(self, raw: str, what: str, keys: tuple[str, ...]) -> dict[str, Any]:
        try:
            data = json.loads(raw)
        except ValueError:
            raise OperatorError(f"{what} is not a JSON object") from None
        if not isinstance(data, dict):
            raise OperatorError(f"{what} is not a JSON object")
        self.hide(data)
        missing = [k for k in keys if k not in data or data[k] in (None, "")]
        if missing:
            raise OperatorError(f"{what} lacks keys: {', '.join(missing)}")
        return data

    # ---------- state ----------

    def state(self) -> dict[str, Any]:
        """Where the rotation for this token stands; loads old/new values (registered no_log)."""
        sid = self.p["secret_id"]
        desc = self.describe(sid)
        stages: dict[str, list[str]] = desc.get("VersionIdsToStages") or {}
        current = [v for v, s in stages.items() if "AWSCURRENT" in s]
        if not current:
            raise OperatorError(f"secret {sid} has no AWSCURRENT version")
        tok_stages = stages.get(self.token, [])
        if "AWSCURRENT" in tok_stages:
            phase = "finished"
        elif "AWSPENDING" in tok_stages:
            phase = "pending"
        elif self.token in stages or self._version_exists(sid):
            phase = "superseded"
        else:
            phase = "new"
        foreign = sorted(
            v for v, s in stages.items() if "AWSPENDING" in s and "AWSCURRENT" not in s and v != self.token
        )
        st: dict[str, Any] = {
            "arn": desc.get("ARN", ""),
            "name": desc.get("Name", ""),
            "phase": phase,
            "current_version_id": current[0],
            "token_stages": sorted(tok_stages),
            "foreign_pending": foreign,
            "previous_version_id": next((v for v, s in stages.items() if "AWSPREVIOUS" in s), ""),
        }
        if phase == "finished":
            if not st["previous_version_id"]:
                raise OperatorError(f"secret {sid}: token's version is AWSCURRENT but there is no AWSPREVIOUS")
            st["old_raw"] = self.get_value(sid, "AWSPREVIOUS")
            st["new_raw"] = self.get_value(sid, "AWSCURRENT", self.token)
        else:
            st["old_raw"] = self.get_value(sid, "AWSCURRENT")
            st["new_raw"] = self.get_value(sid, "AWSPENDING", self.token) if phase == "pending" else None
        if self.p["kind"] == "postgres-role":
            st["old"] = self.parse(st["old_raw"], f"secret {sid} (old version)", PG_KEYS)
            st["new"] = (self.parse(st["new_raw"], f"secret {sid} (token version)", PG_KEYS)
                         if st["new_raw"] else None)
            st["old_username"] = st["old"]["username"]
            if st["new"]:
                st["new_username"] = st["new"]["username"]
            elif self.p["strategy"] == "alternating-users":
                st["new_username"] = alternate_username(st["old"])
            else:
                st["new_username"] = st["old"]["username"]
            st["endpoint"] = f"{st['old']['host']}:{st['old']['port']}/{st['old']['dbname']}"
        return st

    def _version_exists(self, sid: str) -> bool:
        """True when the token names a version that lost all its stages (deprecated)."""
        resp = self._aws(
            "ListSecretVersionIds", self.sm.list_secret_version_ids, SecretId=sid, IncludeDeprecated=True,
        )
        return any(v.get("VersionId") == self.token for v in resp.get("Versions", []))

    def require_no_foreign(self, st: dict[str, Any]) -> None:
        if st["foreign_pending"]:
            raise OperatorError(
                f"secret {self.p['secret_id']}: a rotation is already pending under another token "
                f"(version {', '.join(st['foreign_pending'])}); not touching it. Resume it with "
                "client_request_token=<that version id>, or remove its AWSPENDING stage after checking."
            )
        if st["phase"] == "superseded":
            raise OperatorError(
                f"secret {self.p['secret_id']}: the version for token {self.token} is no longer current or "
                f"pending (stages {st['token_stages'] or 'none'}); a later rotation superseded it"
            )

    # ---------- postgres helpers ----------

    def admin_creds(self, st: dict[str, Any]) -> dict[str, Any] | None:
        admin_id = self.p["admin_secret_id"] or st["old"].get("masterarn")
        if not admin_id:
            if self.p["strategy"] == "alternating-users":
                raise OperatorError("alternating-users needs admin_secret_id (or a masterarn key in the secret)")
            return None
        admin = self.parse(self.get_value(admin_id, "AWSCURRENT"), f"admin secret {admin_id}",
                           ("username", "password"))
        for k in ("host", "port", "dbname"):
            admin.setdefault(k, st["old"][k])
        admin["_id"] = admin_id
        return admin

    def connect(self, creds: dict[str, Any], who: str, dbname: str | None = None) -> Any:
        try:
            kw: dict[str, Any] = {
                "host": str(creds["host"]), "port": int(creds["port"]),
                "dbname": dbname or str(creds["dbname"]),
                "user": str(creds["username"]), "password": str(creds["password"]),
                "connect_timeout": self.p["connect_timeout"], "application_name": APP_NAME,
                "autocommit": True,
            }
            if creds.get("sslmode"):
                kw["sslmode"] = str(creds["sslmode"])
            return psycopg.connect(**kw)
        except psycopg.Error as e:
            raise OperatorError(f"cannot log in as {who} ({creds['username']}@{creds['host']}:{creds['port']}): "
                            f"{self._pgmsg(e)}") from None

    def can_login(self, creds: dict[str, Any]) -> bool:
        try:
            self.connect(creds, "probe").close()
            return True
        except OperatorError:
            return False

    @staticmethod
    def _pgmsg(e: Exception) -> str:
        return " ".join(str(e).split())

    def set_password(self, conn: Any, role: str, password: str, create_from: str | None = None) -> str:
        """Set `role`'s password (a SCRAM verifier) and LOGIN; create the role when missing (alternating)."""
        verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
        self.m.no_log_values.add(verifier)
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            exists = cur.fetchone() is not None
            if exists:
                # LOGIN only for alternating-users (the role may have been retired with NOLOGIN); a role that
                # changes its own password (single-user without admin) may not touch its attributes.
                stmt = "ALTER ROLE {} WITH LOGIN PASSWORD {}" if create_from else "ALTER ROLE {} WITH PASSWORD {}"
                cur.execute(sql.SQL(stmt).format(sql.Identifier(role), sql.Literal(verifier)))
                return "altered"
            if create_from is None:
                raise OperatorError(f"role {role} does not exist")
            with conn.transaction():
                cur.execute(sql.SQL("CREATE ROLE {} WITH LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(verifier)))
                # As the AWS multi-user template: the clone gets the privileges of the original role.
                cur.execute(sql.SQL("GRANT {} TO {}").format(
                    sql.Identifier(create_from), sql.Identifier(role)))
            return "created"

    def sessions_of(self, conn: Any, role: str) -> list[dict[str, Any]]:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pid, coalesce(host(client_addr), 'local'), application_name, "
                "to_char(backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SSZ') "
                "FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid() ORDER BY pid",
                (role,),
            )
            return [{"pid": r[0], "client": r[1], "application": r[2], "since": r[3]} for r in cur.fetchall()]

    # ---------- steps ----------

    def step_status(self) -> dict[str, Any]:
        st = self.state()
        out = self.public(st)
        if self.p["kind"] == "postgres-role" and not st["foreign_pending"] and st["phase"] != "superseded":
            admin = self.admin_creds(st)
            if admin is not None:
                self.connect(admin, f"admin (secret {admin['_id']})", str(admin["dbname"])).close()
                out["checked_login"] = f"admin {admin['username']}"
            elif st["phase"] == "new":
                self.connect(st["old"], "the current role (AWSCURRENT)").close()
                out["checked_login"] = f"current {st['old']['username']}"
            elif not (self.can_login(st["new"]) or self.can_login(st["old"])):
                raise OperatorError("neither the current nor the pending credentials log in")
        out["plan_steps"] = self.plan_steps(st)
        out["msg"] = f"token {self.token}: {st['phase']}" + (
            f"; {out['checked_login']} logs in" if out.get("checked_login") else "")
        return out

    def plan_steps(self, st: dict[str, Any]) -> dict[str, str]:
        """Deterministic lines saying what each step will do (for the check-mode plan)."""
        sid, kind, strategy = self.p["secret_id"], self.p["kind"], self.p["strategy"]
        finish = "finish: move AWSCURRENT to the new version (AWSPREVIOUS keeps the old one)"
        if kind == "api-key":
            return {
                "create": f"create: secret {sid}: generate a new api key, staged AWSPENDING",
                "set": "set: no database to update (provider hook, if configured, registers the key)",
                "test": "test: check the pending key is present and differs from the current one",
                "finish": finish,
                "prove": "prove: rollout of the consumers (no session check for api keys)",
                "retire": "retire: the provider hook (if configured) revokes the old key",
            }
        old, new = st["old_username"], st["new_username"]
        admin_id = self.p["admin_secret_id"] or st["old"].get("masterarn")
        via = f"via admin secret {admin_id}" if admin_id else f"as {old} itself"
        if self.p["test_query"]:
            test = f"test: log in as {new} with the pending password and run test_query (read-only)"
        else:
            test = f"test: log in as {new} with the pending password and SELECT from {self.p['test_table']}"
        if strategy == "single-user":
            return {
                "create": f"create: secret {sid}: new password for role {old}, staged AWSPENDING",
                "set": f"set: ALTER ROLE {old} PASSWORD on {st['endpoint']} {via} (the old password stops "
                       "working here; consumers reconnect only after their restart)",
                "test": test,
                "finish": finish,
                "prove": "prove: consumer rollout complete (single-user: one role, no session check)",
                "retire": "retire: nothing left (single-user: the old password stopped working at set)",
            }
        return {
            "create": f"create: secret {sid}: switch role {old} -> {new}, new password, staged AWSPENDING",
            "set": f"set: reset the password of role {new} (LOGIN; created with the privileges of {old} if "
                   f"missing) on {st['endpoint']} {via}",
            "test": test,
            "finish": finish,
            "prove": f"prove: wait up to {self.p['drain_timeout']}s until pg_stat_activity shows no session "
                     f"of role {old}",
            "retire": f"retire: ALTER ROLE {old} NOLOGIN (AWSPREVIOUS keeps its credentials for a rollback)",
        }

    def public(self, st: dict[str, Any]) -> dict[str, Any]:
        keys = ("phase", "current_version_id", "previous_version_id", "token_stages", "foreign_pending",
                "old_username", "new_username", "endpoint", "arn", "name")
        return {k: st[k] for k in keys if k in st}

    def step_create(self) -> dict[str, Any]:
        st = self.state()
        self.require_no_foreign(st)
        out = self.public(st)
        if st["phase"] in ("pending", "finished"):
            out["msg"] = f"version {self.token} already exists ({st['phase']}); reused"
            return out
        if self.p["kind"] == "postgres-role":
            new = dict(st["old"])
            if self.p["strategy"] == "alternating-users":
                new["username"] = alternate_username(st["old"])
                if st["old"].get("alternate_username"):
                    new["alternate_username"] = st["old"]["username"]
            new["password"] = gen_password(self.p["password_length"])
            self.m.no_log_values.add(new["password"])
            value = json.dumps(new)
            out["new_username"] = new["username"]
        else:
            key = secrets.token_urlsafe(self.p["api_key_length"])[: self.p["api_key_length"]]
            self.m.no_log_values.add(key)
            try:
                old = json.loads(st["old_raw"])
            except ValueError:
                old = None
            if isinstance(old, dict):
                self.hide(old)
                value = json.dumps({**old, self.p["api_key_field"]: key})
            else:
                value = key
        self.m.no_log_values.add(value)
        if not self.m.check_mode:
            self._aws("PutSecretValue", self.sm.put_secret_value, SecretId=self.p["secret_id"],
                      ClientRequestToken=self.token, SecretString=value, VersionStages=["AWSPENDING"])
        out.update(changed=True, phase="pending", msg=f"staged version {self.token} as AWSPENDING")
        return out

    def require_new(self, st: dict[str, Any], step: str) -> None:
        self.require_no_foreign(st)
        if st["phase"] == "new":
            raise OperatorError(f"step {step}: no version for token {self.token}; run the create step first")

    def step_set(self) -> dict[str, Any]:
        st = self.state()
        self.require_new(st, "set")
        out = self.public(st)
        if self.p["kind"] != "postgres-role":
            out["msg"] = "api-key: nothing to set here (the provider hook applies it)"
            return out
        new = st["new"]
        if self.can_login(new):
            out["msg"] = f"role {new['username']} already logs in with the pending password"
            return out
        admin = self.admin_creds(st)
        if admin is not None:
            conn = self.connect(admin, f"admin (secret {admin['_id']})", str(admin["dbname"]))
        else:
            conn = self.connect(st["old"], "the current role (AWSCURRENT)")
        try:
            create_from = st["old"]["username"] if self.p["strategy"] == "alternating-users" else None
            try:
                how = self.set_password(conn, new["username"], new["password"], create_from)
            except psycopg.Error as e:
                raise OperatorError(
                    f"cannot set the password of role {new['username']}: {self._pgmsg(e)}") from None
        finally:
            conn.close()
        if not self.m.check_mode and not self.can_login(new):
            raise OperatorError(f"role {new['username']} still cannot log in with the pending password after set "
                            "(check pg_hba.conf and password_encryption)")
        out.update(changed=True, msg=f"role {new['username']}: password set ({how})")
        return out

    def step_test(self) -> dict[str, Any]:
        st = self.state()
        self.require_new(st, "test")
        out = self.public(st)
        if self.p["kind"] != "postgres-role":
            if st["new_raw"] == st["old_raw"] or not st["new_raw"].strip():
                raise OperatorError("the pending api key is empty or equal to the current one")
            out["msg"] = "pending api key present and different from the current one"
            return out
        query = self.p["test_query"]
        if query:
            stmt: Any = query
            what = "test_query"
        elif self.p["test_table"]:
            parts = self.p["test_table"].split(".")
            stmt = sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT 1) AS probe").format(
                sql.Identifier(*parts))
            what = f"SELECT from {self.p['test_table']}"
        else:
            raise OperatorError("postgres-role test needs test_table or test_query")
        conn = self.connect(st["new"], "the pending role (AWSPENDING)")
        try:
            conn.autocommit = False
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION READ ONLY")
                cur.execute(stmt)
                rows = len(cur.fetchall()) if cur.description else 0
            conn.rollback()
        except psycopg.Error as e:
            raise OperatorError(f"test as {st['new']['username']} failed ({what}): {self._pgmsg(e)}") from None
        finally:
            conn.close()
        out["msg"] = f"logged in as {st['new']['username']} and ran {what} ({rows} row(s), read-only)"
        return out

    def step_finish(self) -> dict[str, Any]:
        st = self.state()
        self.require_new(st, "finish")
        out = self.public(st)
        sid = self.p["secret_id"]
        changed = False
        if st["phase"] == "pending":
            if not self.m.check_mode:
                self._aws("UpdateSecretVersionStage", self.sm.update_secret_version_stage, SecretId=sid,
                          VersionStage="AWSCURRENT", MoveToVersionId=self.token,
                          RemoveFromVersionId=st["current_version_id"])
            out["previous_version_id"] = st["current_version_id"]
            changed = True
        if "AWSPENDING" in st["token_stages"] and not self.m.check_mode:
            self._aws("UpdateSecretVersionStage", self.sm.update_secret_version_stage, SecretId=sid,
                      VersionStage="AWSPENDING", RemoveFromVersionId=self.token)
            changed = True
        out.update(changed=changed, phase="finished",
                   msg=f"AWSCURRENT is version {self.token}" + ("" if changed else " (already)"))
        return out

    def _alternating_finished(self, step: str) -> tuple[dict[str, Any], dict[str, Any]]:
        st = self.state()
        self.require_new(st, step)
        if st["phase"] != "finished":
            raise OperatorError(f"step {step}: the rotation is not finished yet (AWSCURRENT is not {self.token})")
        admin = self.admin_creds(st)
        assert admin is not None  # alternating-users always has one (admin_creds raises otherwise)
        if st["old_username"] in (st["new_username"], admin["username"]):
            raise OperatorError(f"refusing to retire role {st['old_username']}: it is the new or the admin role")
        return st, admin

    def step_prove(self) -> dict[str, Any]:
        if self.p["kind"] != "postgres-role" or self.p["strategy"] != "alternating-users":
            return {"msg": "nothing to prove for this kind/strategy"}
        st, admin = self._alternating_finished("prove")
        out = self.public(st)
        conn = self.connect(admin, f"admin (secret {admin['_id']})", str(admin["dbname"]))
        deadline = time.monotonic() + self.p["drain_timeout"]
        polls = 0
        try:
            while True:
                polls += 1
                old = self.sessions_of(conn, st["old_username"])
                if not old:
                    break
                if time.monotonic() >= deadline:
                    who = ", ".join(
                        f"pid {s['pid']} from {s['client']} ({s['application'] or '-'})" for s in old)
                    raise OperatorError(
                        f"{len(old)} session(s) of the previous role {st['old_username']} remain after "
                        f"{self.p['drain_timeout']}s: {who}. Consumers have not switched; the old "
                        "credentials were NOT retired. Find and restart these clients, then rerun with the "
                        "same token."
                    )
                time.sleep(self.p["poll_interval"])
            new_sessions = len(self.sessions_of(conn, st["new_username"]))
        finally:
            conn.close()
        out.update(sessions=[], polls=polls, new_role_sessions=new_sessions,
                   msg=f"no session of {st['old_username']} remains; {new_sessions} session(s) of "
                       f"{st['new_username']}")
        return out

    def step_retire(self) -> dict[str, Any]:
        if self.p["kind"] != "postgres-role":
            return {"msg": "api-key: the provider hook revokes the old key; AWSPREVIOUS keeps it"}
        if self.p["strategy"] != "alternating-users":
            return {"msg": "single-user: the old password stopped working at the set step"}
        st, admin = self._alternating_finished("retire")
        out = self.public(st)
        role = st["old_username"]
        conn = self.connect(admin, f"admin (secret {admin['_id']})", str(admin["dbname"]))
        try:
            old = self.sessions_of(conn, role)
            if old:
                raise OperatorError(f"{len(old)} session(s) of {role} appeared again; not retiring it (rerun)")
            with conn.cursor() as cur:
                cur.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (role,))
                row = cur.fetchone()
                if row is None or not row[0]:
                    out["msg"] = f"role {role} is already NOLOGIN" if row else f"role {role} does not exist"
                    return out
                if not self.m.check_mode:
                    try:
                        cur.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(role)))
                    except psycopg.Error as e:
                        raise OperatorError(f"cannot make role {role} NOLOGIN: {self._pgmsg(e)}") from None
            after = self.sessions_of(conn, role)
        finally:
            conn.close()
        out.update(changed=True, sessions=after, msg=f"role {role} is now NOLOGIN"
                   + (f"; {len(after)} session(s) slipped in before it (still connected)" if after else ""))
        return out


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "step": {"type": "str", "required": True,
                     "choices": ["status", "create", "set", "test", "finish", "prove", "retire"]},
            "secret_id": {"type": "str", "required": True},
            "token": {"type": "str", "default": ""},
            "kind": {"type": "str", "required": True, "choices": ["postgres-role", "api-key"]},
            "strategy": {"type": "str", "default": "single-user",
                         "choices": ["single-user", "alternating-users"]},
            "admin_secret_id": {"type": "str"},
            "test_table": {"type": "str"},
            "test_query": {"type": "str"},
            "drain_timeout": {"type": "int", "default": 300},
            "poll_interval": {"type": "float", "default": 2.0},
            "password_length": {"type": "int", "default": 32, "no_log": False},
            "api_key_length": {"type": "int", "default": 40, "no_log": False},
            "api_key_field": {"type": "str", "default": "api_key", "no_log": False},
            "region": {"type": "str"},
            "connect_timeout": {"type": "int", "default": 10},
        },
        supports_check_mode=True,
    )
    if not HAS_BOTO3 or not HAS_PSYCOPG:
        module.fail_json(msg="secret_rotation needs boto3 and psycopg 3 in the module's interpreter",
                         error="missing boto3/psycopg")
    p = module.params
    if p["password_length"] < 16 or p["api_key_length"] < 16:
        module.fail_json(msg="password_length and api_key_length must be at least 16", error="too short")
    rot = Rotation(module)
    step = p["step"]
    if p["token"].strip():
        rot.token = normalize_token(p["token"])
    elif step == "status":
        rot.token = str(uuid.uuid4())
    else:
        module.fail_json(msg=f"step {step} needs a token", error=f"step {step} needs a token")
    if module.check_mode and step != "status":
        module.fail_json(msg=f"step {step} changes things; only status runs in check mode",
                         error="check mode")
    try:
        result = dispatch(rot, step)
    except OperatorError as e:
        msg = f"{step}: {e}"
        module.fail_json(msg=msg, error=msg, step=step, token=rot.token)
    except Exception as e:  # noqa: BLE001 - any other error is reported without a traceback that could carry values
        msg = f"{step}: unexpected {type(e).__name__}: {' '.join(str(e).split())}"
        module.fail_json(msg=msg, error=msg, step=step, token=rot.token)
    result.setdefault("changed", False)
    result.setdefault("foreign_pending", [])
    result.setdefault("phase", "")
    module.exit_json(step=step, token=rot.token, step_ok=True, **result)


if __name__ == "__main__":
    main()
