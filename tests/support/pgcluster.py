"""A throwaway PostgreSQL cluster from the system's server binaries, for integration tests.

PostgreSQL refuses to run as root, so when the tests run as root (CI does) the cluster runs as an
unprivileged OS user (created on first use). It listens on 127.0.0.1 only, with scram-sha-256
password authentication (so tests of credentials mean something), plus a unix socket in its own dir.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN_DIR = Path(os.environ.get("RUNBOOK_BOT_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
OS_USER = "rbtest-pg"


def free_port() -> int:
    """Ask the kernel for a free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_os_user(name: str = OS_USER) -> str:
    """Return the OS user that runs PostgreSQL: an unprivileged one when we are root."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    try:
        pwd.getpwnam(name)
    except KeyError:
        # Parallel test workers may race to create it: "already exists" (exit 9) is success.
        done = subprocess.run(["useradd", "--system", "--create-home", "--shell", "/bin/bash", name], check=False)
        if done.returncode not in (0, 9):
            raise RuntimeError(f"useradd {name} failed with exit code {done.returncode}") from None
    return name


def as_user(user: str, argv: list[str]) -> list[str]:
    """Prefix argv so it runs as `user` (no-op when that is us)."""
    if os.geteuid() == 0 and user != "root":
        return ["runuser", "-u", user, "--", *argv]
    return argv


def chown_tree(path: Path, user: str) -> None:
    """Give `path` (recursively) to `user` when we are root."""
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for n in dirs + files:
            os.lchown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)


@dataclass
class PgCluster:
    """One PostgreSQL cluster: `start()`, use `dsn()`, `stop()`; `run_as_owner` for pg tools."""

    base_dir: Path
    port: int = field(default_factory=free_port)
    superuser: str = "postgres"
    password: str = "test-superuser-pw"
    os_user: str = field(default_factory=ensure_os_user)
    bin_dir: Path = PG_BIN_DIR
    conf: dict[str, str] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "sock"

    def run_as_owner(self, argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        """Run a command as the cluster's OS user (text mode, check=True unless told)."""
        kw.setdefault("check", True)
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(as_user(self.os_user, argv), **kw)  # type: ignore[call-overload,no-any-return]

    def init(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base_dir, 0o755)
        self.socket_dir.mkdir(exist_ok=True)
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        chown_tree(self.base_dir, self.os_user)
        self.run_as_owner([
            str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.superuser,
            f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=trust",
            "--encoding=UTF8", "--locale=C", "--data-checksums",
        ])
        pwfile.unlink()
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "off",
            "max_connections": "100",
            **self.conf,
        }
        with open(self.data_dir / "postgresql.auto.conf", "a") as f:
            for k, v in settings.items():
                f.write(f"{k} = {v}\n")

    def start(self) -> PgCluster:
        if not (self.data_dir / "PG_VERSION").exists():
            self.init()
        self.run_as_owner([
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "60",
            "-l", str(self.base_dir / "server.log"), "start",
        ])
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self.run_as_owner(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-w", "-m", mode, "stop"],
                check=False,
            )

    def dsn(self, dbname: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        user = user or self.superuser
        password = self.password if password is None and user == self.superuser else password
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL through psql over the socket as the superuser; return stdout."""
        out = self.run_as_owner([
            str(self.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", str(self.socket_dir), "-p", str(self.port), "-U", self.superuser, "-d", dbname, "-c", sql,
        ])
        return out.stdout


def make_tmp_dir(prefix: str) -> Path:
    """A temp dir readable by the cluster's OS user (pytest's tmp_path is 0700 root-owned)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("RUNBOOK_BOT_TEST_TMP", "/tmp")))
    os.chmod(path, 0o755)
    return path


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
