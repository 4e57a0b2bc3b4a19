"""Two database roles: migrations run as the owner, the bot as a runtime role that owns nothing, so the
bot's own credentials cannot switch off or get around the audit trail's append-only guards."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from bot.composition import build_cli
from bot.config import Settings
from bot.domain.runs import RunState
from bot.spine import Spine
from bot.storage import audit
from bot.storage import database as database_module
from tests.support.pgcluster import make_tmp_dir, remove_tree
from tests.support.spine import drain, op

pytestmark = pytest.mark.slow


ATTACKS = [
    "ALTER TABLE audit_events DISABLE TRIGGER ALL",
    "ALTER TABLE audit_head DISABLE TRIGGER ALL",
    "TRUNCATE audit_events",
    "DELETE FROM audit_events",
    "UPDATE audit_events SET actor = 'mallory'",
    "DROP TABLE audit_events CASCADE",
    "DROP TRIGGER audit_events_no_update ON audit_events",
    "SET session_replication_role = replica",
    "DELETE FROM runs",
    "UPDATE approvals SET approver = 'mallory'",
]


@pytest.mark.parametrize("sql", ATTACKS)
def test_runtime_role_is_refused_by_privileges(runtime_ctx: Spine, sql: str) -> None:
    """With the runtime role, disabling triggers, TRUNCATE, DELETE and UPDATE of the trail fail: permission denied."""
    res = runtime_ctx.service.request("echo", {"target": "api"}, op(runtime_ctx, "alice"))
    runtime_ctx.service.approve(res.run.id, op(runtime_ctx, "bob"))
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied|must be owner"), \
            runtime_ctx.db.transaction() as conn:
        conn.execute(sql)
    assert audit.verify(runtime_ctx.db).ok


def test_runtime_role_runs_the_whole_spine(runtime_ctx: Spine, two_roles: dict[str, str]) -> None:
    """The runtime role can do everything the bot does (request, approve, execute, audit) with no warning."""
    assert runtime_ctx.warnings == []
    with runtime_ctx.db.transaction() as conn:
        row = conn.execute("SELECT current_user AS me").fetchone()
    assert row is not None and row["me"] == two_roles["runtime"]
    res = runtime_ctx.service.request("echo", {"target": "api", "token": "s3cret"}, op(runtime_ctx, "alice"))
    runtime_ctx.service.approve(res.run.id, op(runtime_ctx, "bob"))
    (done,) = drain(runtime_ctx)
    assert done.state is RunState.SUCCEEDED, done.error
    assert audit.verify(runtime_ctx.db).ok


def test_head_can_only_move_by_one_even_for_the_runtime_role(runtime_ctx: Spine) -> None:
    """The runtime role may UPDATE audit_head (appends do), but its trigger, which it cannot drop, refuses jumps."""
    runtime_ctx.service.request("echo", {"target": "api"}, op(runtime_ctx, "alice"))
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="only moves forward"), \
            runtime_ctx.db.transaction() as conn:
        conn.execute("UPDATE audit_head SET seq = 0, hash = repeat('0', 64)")


def test_tables_of_later_migrations_are_granted(spine_env: dict[str, str], two_roles: dict[str, str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A table added by a migration numbered after 0003 is usable by the runtime role without its own GRANT."""
    shipped = database_module.migrations()
    monkeypatch.setattr(database_module, "migrations", lambda: [
        *shipped, ("0099_later", "CREATE TABLE later_things (id int PRIMARY KEY);")])
    env = {**spine_env, "DATABASE_URL": two_roles["DATABASE_URL"],
           "RUNBOOK_BOT_MIGRATION_URL": two_roles["RUNBOOK_BOT_MIGRATION_URL"]}
    context = build_cli(Settings.from_env(env))
    try:
        with context.db.transaction() as conn:
            conn.execute("INSERT INTO later_things VALUES (1)")
            conn.execute("DELETE FROM later_things")
        with pytest.raises(psycopg.errors.InsufficientPrivilege), context.db.transaction() as conn:
            conn.execute("ALTER TABLE later_things ADD COLUMN x int")
    finally:
        context.close()


def test_database_url_alone_warns_that_the_runtime_role_owns_the_tables(ctx: Spine) -> None:
    """DATABASE_URL without RUNBOOK_BOT_MIGRATION_URL works as before, with a warning naming the risk."""
    assert len(ctx.warnings) == 1
    assert "could disable the audit triggers" in ctx.warnings[0]
    assert "RUNBOOK_BOT_MIGRATION_URL" in ctx.warnings[0]


def test_embedded_default_sets_up_both_roles(spine_env: dict[str, str]) -> None:
    """Without DATABASE_URL the embedded superuser migrates and the bot connects as a role owning nothing."""
    base = make_tmp_dir("rb-embedded-")  # the server's OS user must reach it (pytest's tmp_path is 0700)
    home = base / "home"
    env = {**spine_env, "RUNBOOK_BOT_HOME": str(home), "DATABASE_URL": ""}
    context = build_cli(Settings.from_env(env))
    try:
        assert context.warnings == []
        assert (home / "db-runtime.password").stat().st_mode & 0o777 == 0o600
        with context.db.transaction() as conn:
            row = conn.execute("SELECT current_user AS me").fetchone()
        assert row is not None and row["me"] == database_module.EMBEDDED_RUNTIME_ROLE
        for sql in ("ALTER TABLE audit_events DISABLE TRIGGER ALL", "TRUNCATE audit_events",
                    "DELETE FROM audit_events"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), context.db.transaction() as conn:
                conn.execute(sql)
        res = context.service.request("echo", {"target": "api"}, op(context, "alice"))
        assert res.run.state is RunState.PENDING_APPROVAL
    finally:
        context.close()
        database_module.stop_embedded(home)
        remove_tree(base)


def test_runtime_role_alone_starts_once_the_owner_migrated(runtime_ctx: Spine, spine_env: dict[str, str],
                                                           two_roles: dict[str, str]) -> None:
    """Workers given only DATABASE_URL (the runtime role) start after a migration job ran as the owner."""
    env = {**spine_env, "DATABASE_URL": two_roles["DATABASE_URL"], "RUNBOOK_BOT_MIGRATION_URL": ""}
    context = build_cli(Settings.from_env(env))
    try:
        assert context.warnings == []
        assert context.service.get(context.service.request("echo", {"target": "api"}, op(context, "alice")).run.id)
    finally:
        context.close()


def test_pending_migration_without_the_owner_is_one_line_error(runtime_ctx: Spine, spine_env: dict[str, str],
                                                               two_roles: dict[str, str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A pending migration with only the runtime role is refused in one line naming RUNBOOK_BOT_MIGRATION_URL."""
    from bot.errors import StorageError

    shipped = database_module.migrations()
    monkeypatch.setattr(database_module, "migrations", lambda: [
        *shipped, ("0099_later", "CREATE TABLE later_things (id int PRIMARY KEY);")])
    env = {**spine_env, "DATABASE_URL": two_roles["DATABASE_URL"], "RUNBOOK_BOT_MIGRATION_URL": ""}
    with pytest.raises(StorageError, match="RUNBOOK_BOT_MIGRATION_URL") as err:
        build_cli(Settings.from_env(env))
    assert "\n" not in str(err.value)


def test_playbooks_never_see_the_owner_credentials(runtime_ctx: Spine, spine_env: dict[str, str],
                                                   tmp_path: Path) -> None:
    """RUNBOOK_BOT_MIGRATION_URL (the owner's password) is blanked in a playbook's environment, like DATABASE_URL."""
    runbooks, playbooks = tmp_path / "runbooks", tmp_path / "playbooks"
    runbooks.mkdir()
    playbooks.mkdir()
    (runbooks / "peek.md").write_text("---\nname: peek\ntitle: Peek at the environment (test)\nplaybook: peek.yml\n"
                                      "approval: {required: 0}\n---\n# Peek\n")
    (playbooks / "peek.yml").write_text(
        "- name: Peek\n  hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - name: Report the environment\n      ansible.builtin.set_stats:\n        per_host: false\n"
        "        data:\n          result:\n"
        "            owner: \"{{ lookup('ansible.builtin.env', 'RUNBOOK_BOT_MIGRATION_URL') }}\"\n"
        "            runtime: \"{{ lookup('ansible.builtin.env', 'DATABASE_URL') }}\"\n")
    env = {**spine_env, "DATABASE_URL": runtime_ctx.settings.database_url or "",
           "RUNBOOK_BOT_MIGRATION_URL": runtime_ctx.settings.migration_url or "",
           "RUNBOOK_BOT_RUNBOOKS": str(runbooks), "RUNBOOK_BOT_PLAYBOOKS": str(playbooks)}
    context = build_cli(Settings.from_env(env))
    try:
        context.service.request("peek", {}, op(context, "alice"))
        (done,) = drain(context)
        assert done.state is RunState.SUCCEEDED, done.error
        assert done.result == {"owner": "", "runtime": ""}
    finally:
        context.close()
