"""What the runner makes of task events: failure lines keep their cause, bot-reporting tasks are no progress."""

from __future__ import annotations

from bot.execution.runner import _result_message, bot_channel_task


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
