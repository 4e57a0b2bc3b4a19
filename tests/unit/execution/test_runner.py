"""The runner: what it makes of task events (failure lines keep their cause, bot-reporting tasks are no progress),
how it writes extra vars, and where it looks for ansible-playbook."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from bot.errors import ExecutionError
from bot.execution.runner import _result_message, bot_channel_task, playbook_search_path, write_extravars

VENV_BIN = Path(sys.executable).parent


def test_a_message_ending_in_a_colon_keeps_what_follows() -> None:
    """validate_argument_spec's two-line message stays one line with the argument names."""
    msg = "Validation of arguments failed:\nmissing required arguments: scratch_dir, os_user\n"
    assert _result_message({"msg": msg}) == ("Validation of arguments failed: missing required arguments: "
                                             "scratch_dir, os_user")


def test_other_multi_line_messages_keep_their_first_line() -> None:
    """A message whose first line says it all stays that line."""
    assert _result_message({"msg": "boom\nTraceback (most recent call last):\n  ..."}) == "boom"


def test_set_stats_tasks_report_to_the_bot() -> None:
    """set_stats (by FQCN or short name) is the bot's channel; other actions are steps of the runbook."""
    assert bot_channel_task({"resolved_action": "ansible.builtin.set_stats"})
    assert bot_channel_task({"task_action": "set_stats"})
    assert not bot_channel_task({"resolved_action": "ansible.builtin.command", "task_action": "command"})


def test_extravars_are_written_unsafe(tmp_path: object) -> None:
    """Every string extra var is tagged !unsafe so Ansible never templates it."""
    from pathlib import Path

    path = Path(str(tmp_path)) / "extravars"
    write_extravars(path, {"cmd": "{{ lookup('pipe','id') }}", "n": 3, "ok": True})
    text = path.read_text()
    assert "cmd: !unsafe '{{ lookup(''pipe'',''id'') }}'" in text
    assert "n: 3" in text and "ok: true" in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"


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
