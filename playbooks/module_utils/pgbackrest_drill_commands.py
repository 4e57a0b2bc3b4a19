"""How the restore drill (pgbackrest_drill module) runs pgBackRest, PostgreSQL's tools and psql.

Everything runs as the unprivileged OS user (`os_user`), with an argv list (no shell), C locale, no
PGPASSWORD, and a timeout that becomes exit code 124. Imported as `ansible.module_utils.pgbackrest_drill_commands`.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from ansible.module_utils.pgbackrest_drill_text import tail


class Commands:
    """The drill's command runner; `p` is the module's params, `sock` the scratch cluster's socket dir."""

    p: dict[str, Any]
    bin: str
    sock: str

    # -- running things as the OS user -------------------------------------------------------------
    def argv_as_owner(self, argv: list[str]) -> list[str]:
        user = self.p["os_user"]
        if os.geteuid() == 0 and user != "root":
            return ["runuser", "-u", user, "--", *argv]
        return argv

    def run(self, argv: list[str], timeout: float | None = None, stdin: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "LC_ALL": "C", "LANG": "C", **(env or {})}
        full_env.pop("PGPASSWORD", None)
        try:
            return subprocess.run(self.argv_as_owner(argv), capture_output=True, text=True, input=stdin,
                                  timeout=timeout, cwd="/", env=full_env, check=False)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
            return subprocess.CompletedProcess(argv, 124, out, err + f"\ntimed out after {timeout}s")

    def pgbackrest_argv(self, *args: str) -> list[str]:
        argv = ["pgbackrest"]
        if self.p["pgbackrest_config"]:
            argv.append(f"--config={self.p['pgbackrest_config']}")
        return [*argv, f"--stanza={self.p['stanza']}", *args]

    def pgbackrest(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        return self.run(self.pgbackrest_argv(*args), timeout=timeout)

    def psql(self, sql: str, dbname: str = "postgres", timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return self.run([
            os.path.join(self.bin, "psql"), "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
            "-h", self.sock, "-p", str(self.p["drill_port"]), "-U", self.p["db_superuser"], "-d", dbname,
        ], stdin=sql, timeout=timeout)

    def sql_value(self, sql: str, dbname: str = "postgres") -> str:
        r = self.psql(sql, dbname)
        if r.returncode != 0:
            raise RuntimeError(tail(r.stderr) or f"psql exited {r.returncode}")
        return str(r.stdout).strip("\n")
