"""The runner: what it makes of task events (failure lines keep their cause, bot-reporting tasks are no progress)
and how it writes extra vars."""

from __future__ import annotations

from bot.execution.runner import _result_message, bot_channel_task, write_extravars


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
