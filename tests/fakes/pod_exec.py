"""A pod's app container as pod exec sees it, for the fake Kubernetes API's exec handler.

PID 1 of the simulated container is a real local node process: `sh -c "kill -USR2 1"` really signals it,
so the heap snapshot the playbook copies out is a real one. The container's filesystem is virtual except
for its diagnostic dir, which maps to the node process's real --diagnostic-dir. The commands the
heap-snapshot playbook runs (cat, readlink, df, ls, stat, tail, rm, sh -c "kill -USR2 1") behave like
coreutils; anything else answers `not found` with exit code 127, like a shell would.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class FakeContainer:
    pid: int                      # the real node process standing in for PID 1
    local_diag: Path              # its real --diagnostic-dir
    node_options: str             # NODE_OPTIONS as PID 1's environment shows it
    diag: str = "/diag"           # the diagnostic dir's path inside the container
    argv: tuple[str, ...] = ("node", "/app/dist/main.js")
    cwd: str = "/app"
    extra_env: dict[str, str] = field(default_factory=dict)
    df_avail_kb: int | None = None  # pretend the diagnostic dir's filesystem has this much free space
    signals: int = 0              # SIGUSR2 sent through exec

    def _local(self, path: str) -> Path | None:
        if path == self.diag:
            return self.local_diag
        if path.startswith(self.diag + "/") and "/.." not in path:
            return self.local_diag / path[len(self.diag) + 1:]
        return None

    def _proc_file(self, path: str) -> bytes | None:
        if path == "/proc/1/cmdline":
            return b"".join(a.encode() + b"\0" for a in self.argv)
        if path == "/proc/1/environ":
            env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "NODE_ENV": "production", **self.extra_env}
            if self.node_options:
                env["NODE_OPTIONS"] = self.node_options
            return b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())
        if path == "/proc/1/status":
            return Path(f"/proc/{self.pid}/status").read_bytes()
        return None

    def _read(self, path: str) -> bytes | None:
        data = self._proc_file(path)
        if data is not None:
            return data
        local = self._local(path)
        if local is not None and local.is_file():
            return local.read_bytes()
        return None

    def handle(self, argv: list[str]) -> tuple[bytes, bytes, int]:
        """Run one exec command; returns (stdout, stderr, exit code)."""
        missing = b"No such file or directory\n"
        match argv:
            case ["cat", path]:
                data = self._read(path)
                return (data, b"", 0) if data is not None else (b"", b"cat: " + path.encode() + b": " + missing, 1)
            case ["readlink", "/proc/1/cwd"]:
                return self.cwd.encode() + b"\n", b"", 0
            case ["df", "-Pk", path] if self._local(path) is not None and self.df_avail_kb is not None:
                head = "Filesystem 1024-blocks Used Available Capacity Mounted on\n"
                line = f"overlay 1024 {1024 - self.df_avail_kb} {self.df_avail_kb} 99% {path}\n"
                return (head + line).encode(), b"", 0
            case ["df", "-Pk", path] if self._local(path) is not None:
                p = subprocess.run(["df", "-Pk", str(self._local(path))], capture_output=True)
                return p.stdout.replace(str(self._local(path)).encode(), path.encode()), p.stderr, p.returncode
            case ["ls", "-1a", path] if (local := self._local(path)) is not None and local.is_dir():
                names = [".", "..", *sorted(os.listdir(local))]
                return "".join(n + "\n" for n in names).encode(), b"", 0
            case ["stat", "-c", "%s", path] if (local := self._local(path)) is not None and local.exists():
                return f"{local.stat().st_size}\n".encode(), b"", 0
            case ["tail", "-c", count, path] if (data := self._read(path)) is not None:
                return data[-int(count):], b"", 0
            case ["rm", "-f", path] if self._local(path) is not None:
                self._local(path).unlink(missing_ok=True)  # type: ignore[union-attr]
                return b"", b"", 0
            case ["sh", "-c", "kill -USR2 1"]:
                self.signals += 1
                os.kill(self.pid, signal.SIGUSR2)
                return b"", b"", 0
            case [cmd, *_]:
                return b"", f"sh: {cmd}: not found or bad arguments {argv[1:]!r}\n".encode(), 127
        return b"", b"empty command\n", 127


class PodExec:
    """The exec handler: pods by name -> FakeContainer; exec into any other pod fails loudly."""

    def __init__(self) -> None:
        self.containers: dict[str, FakeContainer] = {}

    def __call__(
        self, ns: str, pod: str, container: str, command: list[str], stdin: bytes | None
    ) -> tuple[bytes, bytes, int]:
        sim = self.containers.get(pod)
        if sim is None:
            return b"", f"fake: no simulated container in pod {ns}/{pod}\n".encode(), 126
        return sim.handle(command)
