"""Playbook argument specs are generated from the runbook front matter (`runbook-bot specs`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot import cli, specs
from bot.catalog_files import load_catalog
from bot.domain.patterns import PATTERNS
from bot.errors import CatalogError
from tests.support.paths import ROOT as REPO


def test_shipped_argument_specs_match_the_front_matter() -> None:
    """playbooks/argument_specs/*.yml say what runbooks/*.md say: run `runbook-bot specs --write` if not."""
    files = specs.spec_files(load_catalog(REPO / "runbooks", REPO / "playbooks"), REPO / "playbooks")
    assert files
    drifted = [f for f in files if f.drifted]
    assert not drifted, "".join(f.diff() for f in drifted)


def test_shared_patterns_are_written_only_in_the_pattern_table() -> None:
    """No runbook, playbook or module spells out a shared pattern: they name it (the generated specs
    carry the expression)."""
    generated = {f.path for f in specs.spec_files(load_catalog(REPO / "runbooks", REPO / "playbooks"),
                                                  REPO / "playbooks")}
    sources = [*(REPO / "runbooks").glob("*.md"), *(REPO / "playbooks").rglob("*.y*ml"),
               *(REPO / "playbooks").rglob("*.py"), REPO / "docs" / "runbook-format.md"]
    bodies = {body.strip("^$") for body in PATTERNS.values()}
    for path in sources:
        if path in generated:
            continue
        text = path.read_text(encoding="utf-8")
        found = [body for body in bodies if body in text]
        assert not found, f"{path} spells out {found}: use the pattern's name"


@pytest.fixture
def catalog_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(REPO / "runbooks", tmp_path / "runbooks")
    shutil.copytree(REPO / "playbooks", tmp_path / "playbooks", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("RUNBOOK_BOT_RUNBOOKS", str(tmp_path / "runbooks"))
    monkeypatch.setenv("RUNBOOK_BOT_PLAYBOOKS", str(tmp_path / "playbooks"))
    monkeypatch.setenv("RUNBOOK_BOT_HOME", str(tmp_path / "home"))
    return tmp_path


def test_specs_verb_prints_the_drift_and_exits_1_then_write_fixes_it(
    catalog_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A front matter change shows as a diff (exit 1) until `specs --write` regenerates the spec."""
    runbook = catalog_copy / "runbooks" / "scale-workers.md"
    runbook.write_text(runbook.read_text().replace("max: 20", "max: 30"))
    assert cli.main(["specs"]) == 1
    out = capsys.readouterr().out
    assert "-    max: 20\n+    max: 30\n" in out
    assert "scale_workers.yml" in out and "runbook-bot specs --write" in out
    assert cli.main(["specs", "--write"]) == 0
    assert "argument_specs/scale_workers.yml" in capsys.readouterr().out
    assert cli.main(["specs"]) == 0
    assert "max: 30" in (catalog_copy / "playbooks" / "argument_specs" / "scale_workers.yml").read_text()


def test_a_settings_entry_may_not_declare_a_parameter_again(catalog_copy: Path) -> None:
    """A parameter lives in the front matter only: its settings entry may only relax `required`."""
    settings = catalog_copy / "playbooks" / "argument_specs" / "db_connections_settings.yml"
    settings.write_text(settings.read_text() + "  warn_percent:\n    type: int\n    default: 90\n")
    catalog = load_catalog(catalog_copy / "runbooks", catalog_copy / "playbooks")
    with pytest.raises(CatalogError, match="db_connections_settings.warn_percent"):
        specs.spec_files(catalog, catalog_copy / "playbooks")


def test_rollout_undo_to_revision_agrees_with_the_front_matter() -> None:
    """The disagreement issue 12 found: the spec said `default: 0`, the front matter `min: 1`."""
    catalog = load_catalog(REPO / "runbooks", REPO / "playbooks")
    (spec,) = [f for f in specs.spec_files(catalog, REPO / "playbooks") if f.path.name == "rollout_undo.yml"]
    assert "    type: int\n    min: 1\n    max: 1000000\n" in spec.current or ""
    assert "default: 0" not in (spec.current or "")
