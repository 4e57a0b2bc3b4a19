"""Shared by the heap_snapshot_* modules: how a Node.js process was told to write heap snapshots.

Node takes options from its command line (before the script) and from NODE_OPTIONS; the command line
wins. A process started with --heapsnapshot-signal=SIGUSR2 writes a heap snapshot to --diagnostic-dir
(default: its working directory) when it receives SIGUSR2. Without that flag nothing handles SIGUSR2
(unless the app itself does) and the default action of the signal terminates the process, so callers
refuse unless the flag is present.

Only the two relevant option values leave this module: never the environment or the full command line,
which can hold secrets.
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass
from typing import Protocol

from ansible.module_utils.runbook_module import OperatorError

SIGNAL = "SIGUSR2"
# Node creates the snapshot file (empty) right after the signal, before it builds the snapshot.
APPEAR_SECONDS = 60

# Node options that take their value as the next argv element (so that value is not the script).
_VALUE_OPTIONS = {
    "-r", "--require", "--import", "--loader", "--experimental-loader", "--inspect-port", "--debug-port",
    "--title", "--diagnostic-dir", "--heapsnapshot-signal", "--conditions", "-C", "--input-type",
    "--env-file", "--report-dir", "--report-directory", "--report-signal", "--cpu-prof-dir",
    "--heap-prof-dir", "--redirect-warnings", "--icu-data-dir", "--openssl-config", "--policy-integrity",
    "--experimental-policy", "--secure-heap", "--secure-heap-min", "--stack-trace-limit",
    "--unhandled-rejections", "--dns-result-order", "--tls-cipher-list", "--max-http-header-size",
}
# After these, the rest of argv is the program, not Node options.
_STOP_OPTIONS = {"--", "-e", "--eval", "-p", "--print", "-"}

# Argument spec entries of both heap snapshot modules: how wait_for_snapshot polls.
POLL_OPTIONS: dict[str, dict[str, object]] = {
    "timeout": {"type": "int", "default": 900},
    "poll_interval": {"type": "float", "default": 1.0},
    "stable_polls": {"type": "int", "default": 3},
}

HEAP_SNAPSHOT_RE = re.compile(r"^Heap\.[0-9A-Za-z._-]*\.heapsnapshot$")


def node_options_from_argv(argv: list[str]) -> list[str]:
    """Return the Node options of a node command line: argv[1:] up to the script name."""
    out: list[str] = []
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg in _STOP_OPTIONS or not arg.startswith("-"):
            break
        out.append(arg)
        if "=" not in arg and arg in _VALUE_OPTIONS and i + 1 < len(argv):
            out.append(argv[i + 1])
            i += 1
        i += 1
    return out


def split_node_options(value: str) -> list[str]:
    """Split a NODE_OPTIONS value the way Node does (spaces, double quotes)."""
    try:
        return shlex.split(value)
    except ValueError:
        return value.split()


def option_value(options: list[str], name: str) -> str | None:
    """The last value given to `name` (as `name=v` or `name v`) in an option list, or None."""
    found: str | None = None
    for i, opt in enumerate(options):
        if opt.startswith(name + "="):
            found = opt[len(name) + 1:]
        elif opt == name and i + 1 < len(options):
            found = options[i + 1]
    return found


def parse_environ(raw: bytes) -> str | None:
    """NODE_OPTIONS from a /proc/<pid>/environ blob (NUL separated), or None. The rest is dropped."""
    for item in raw.split(b"\0"):
        if item.startswith(b"NODE_OPTIONS="):
            return item[len(b"NODE_OPTIONS="):].decode("utf-8", "replace")
    return None


def snapshot_settings(argv: list[str], node_options: str | None) -> dict[str, str | None]:
    """Where the heap-snapshot signal and the diagnostic dir come from (command line beats NODE_OPTIONS).

    Returns signal, signal_source, diagnostic_dir, diagnostic_dir_source (None when not set).
    """
    cli = node_options_from_argv(argv)
    env = split_node_options(node_options) if node_options else []
    result: dict[str, str | None] = {}
    for key, flag in (("signal", "--heapsnapshot-signal"), ("diagnostic_dir", "--diagnostic-dir")):
        value, source = option_value(cli, flag), "command line"
        if value is None:
            value, source = option_value(env, flag), "NODE_OPTIONS"
        result[key] = value
        result[key + "_source"] = source if value is not None else None
    return result


def refusal(settings: dict[str, str | None], what: str) -> str | None:
    """A clear reason not to send SIGUSR2 to `what`, or None when it is safe."""
    sig = settings.get("signal")
    if sig is None:
        return (
            f"{what} was not started with --heapsnapshot-signal={SIGNAL} (not on its command line nor in "
            f"NODE_OPTIONS): sending {SIGNAL} would not write a heap snapshot, and the signal's default "
            "action terminates the process. Restart it with NODE_OPTIONS='--heapsnapshot-signal=SIGUSR2 "
            "--diagnostic-dir=<dir>' first."
        )
    normalized = sig.upper() if sig.upper().startswith("SIG") else "SIG" + sig.upper()
    if normalized != SIGNAL:
        return (
            f"{what} takes heap snapshots on {sig}, not {SIGNAL}; this runbook only sends {SIGNAL} "
            "(other signals have other meanings, e.g. SIGUSR1 opens the inspector)."
        )
    return None


def parse_rss(status: str) -> int | None:
    """Resident set size in bytes from /proc/<pid>/status text, or None."""
    m = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


def looks_complete(tail: bytes) -> bool:
    """A heap snapshot is one JSON object: a complete file ends with `}` (and maybe whitespace)."""
    return tail.rstrip().endswith(b"}")


class SnapshotSource(Protocol):
    """Where a signalled process writes its snapshot: a host directory, or a directory in a pod."""

    directory: str
    # Said after "no heap snapshot file appeared in DIR within N s of SIGUSR2: ".
    no_file_hint: str

    def new_file(self) -> str | None:
        """The path of the snapshot file the signal made, once it exists."""

    def size(self, path: str) -> int: ...

    def tail(self, path: str) -> bytes:
        """The last 64 bytes of the file."""

    def check_alive(self, path: str | None) -> None:
        """Raise OperatorError when the process is gone (it will write nothing more)."""


@dataclass(frozen=True)
class Snapshot:
    path: str
    size: int
    seconds: float  # from the signal until the file stopped growing: about how long the process was frozen


def wait_for_snapshot(source: SnapshotSource, started: float, timeout: float, interval: float,
                      stable_polls: int) -> Snapshot:
    """Poll until the snapshot file exists, has kept its size for `stable_polls` polls and ends like a
    complete snapshot; an OperatorError (with `path`) when it does not within `timeout` seconds."""
    deadline = started + timeout
    # Node creates the (empty) file as soon as it gets the signal, then builds and writes the snapshot:
    # no file within APPEAR_SECONDS means it is not coming (directory not writable by the process?).
    appear_by = started + min(APPEAR_SECONDS, timeout)
    path: str | None = None
    last, stable, changed_at = -1, 0, started
    while time.monotonic() < deadline:
        time.sleep(interval)
        if path is None:
            path = source.new_file()
        if path is None:
            source.check_alive(None)
            if time.monotonic() > appear_by:
                raise OperatorError(f"no heap snapshot file appeared in {source.directory} within {APPEAR_SECONDS} s"
                                    f" of {SIGNAL}: {source.no_file_hint}")
            continue
        size = source.size(path)
        if size != last:
            changed_at = time.monotonic()
        stable = stable + 1 if size == last and size > 0 else 0
        grew, last = size != last, size
        if stable >= stable_polls and looks_complete(source.tail(path)):
            return Snapshot(path, size, round(changed_at - started, 3))
        if not grew:
            source.check_alive(path)
    raise OperatorError(
        f"no complete heap snapshot after {timeout} s"
        + (f" ({path} is {last} bytes and still changing or incomplete)" if path else
           f" (no new .heapsnapshot file appeared in {source.directory})"),
        path=path,
    )
