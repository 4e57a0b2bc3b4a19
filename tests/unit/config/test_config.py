"""Settings: where the project is looked for, and environment variables winning over it."""

from __future__ import annotations

from pathlib import Path

from tests.support.paths import ROOT


def test_settings_name_where_the_project_was_looked_for(tmp_path: Path) -> None:
    """Outside any project, the search is recorded for error messages; env vars still win."""
    from bot.config import Settings, find_project_dir

    project, searched = find_project_dir(tmp_path)
    assert f"in {tmp_path} or its parents" in searched
    assert project == ROOT  # the checkout this package runs from (editable install)
    mine = tmp_path / "books"
    assert Settings.from_env({"RUNBOOK_BOT_RUNBOOKS": str(mine)}).runbooks_dir == mine
