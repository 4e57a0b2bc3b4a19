"""The first ten minutes (issue 11): a worker started with any PATH runs playbooks, the CLI works outside
the repo root, the shipped db-connections runbook works on the embedded default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.errors import ExecutionError
from bot.execution.runner import playbook_search_path
from tests.integration.conftest import ROOT, cli

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent


def bare_env(env: dict[str, str], user: str = "alice") -> dict[str, str]:
    """The environment of a shell without the venv: PATH=/usr/bin:/bin, no VIRTUAL_ENV."""
    keep = {k: os.environ[k] for k in ("HOME", "LANG", "TMPDIR") if k in os.environ}
    return {**keep, **env, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "LOGNAME": user, "USER": user}


def test_worker_started_without_the_venv_on_path_runs_playbooks(spine_env: dict[str, str]) -> None:
    """`runbook-bot worker` run by absolute path from a shell whose PATH lacks the venv finds ansible-playbook."""
    req = cli(spine_env, "request", "echo", "target=api", "--reason", "first run")
    assert req.returncode == 0, req.stderr
    run_id = req.stdout.strip()
    assert cli(spine_env, "approve", run_id, user="bob").returncode == 0

    work = subprocess.run([str(VENV_BIN / "runbook-bot"), "worker", "--once"], env=bare_env(spine_env),
                          capture_output=True, text=True, timeout=180, cwd="/")

    assert work.returncode == 0, work.stderr
    status = json.loads(cli(spine_env, "status", run_id, "--json").stdout)
    assert status["state"] == "succeeded", (status["error"], work.stdout)


def test_runner_without_ansible_playbook_says_where_it_looked(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """No ansible-playbook next to the interpreter nor on PATH: the error names both, not `exited 127`."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    monkeypatch.setattr(sys, "executable", str(fake_bin / "python3"))
    monkeypatch.setattr("sysconfig.get_path", lambda *a, **k: str(tmp_path / "nowhere"))

    with pytest.raises(ExecutionError) as err:
        playbook_search_path({"PATH": str(tmp_path / "empty")})

    assert f"ansible-playbook not found in {fake_bin}" in str(err.value)
    assert f"PATH ({tmp_path / 'empty'})" in str(err.value)


def test_search_path_puts_this_environment_first() -> None:
    """The interpreter's own scripts dir comes before an inherited PATH that lacks it."""
    path = playbook_search_path({"PATH": "/usr/bin:/bin"})
    assert path.split(os.pathsep)[0] == str(VENV_BIN)
    assert path.endswith("/usr/bin:/bin")
