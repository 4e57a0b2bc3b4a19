"""Loading the catalog from `runbooks/*.md` and hashing playbook content."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from bot.domain.catalog import Catalog, Runbook, parse_runbook, split_front_matter
from bot.errors import CatalogError


def load_runbook(path: Path, playbooks_dir: Path) -> Runbook:
    source = str(path)
    front, body = split_front_matter(path.read_text(encoding="utf-8"), source)
    try:
        data = yaml.safe_load(front)
    except yaml.YAMLError as e:
        raise CatalogError(source, "front matter", f"invalid YAML: {str(e).splitlines()[0]}") from None
    runbook = parse_runbook(data, body, source, expected_name=path.stem)
    playbook = playbook_path(runbook, playbooks_dir)
    if not playbook.is_file():
        raise CatalogError(source, "playbook", f"{playbook} does not exist")
    return runbook


def load_catalog(runbooks_dir: Path, playbooks_dir: Path) -> Catalog:
    """Every runbook in `runbooks_dir`, validated; the first error names its file and key."""
    if not runbooks_dir.is_dir():
        raise CatalogError(str(runbooks_dir), "RUNBOOK_BOT_RUNBOOKS", "is not a directory")
    return Catalog(load_runbook(p, playbooks_dir) for p in sorted(runbooks_dir.glob("*.md")))


def playbook_path(runbook: Runbook, playbooks_dir: Path) -> Path:
    p = Path(runbook.playbook)
    return (p if p.is_absolute() else playbooks_dir / p).resolve()


def playbook_files(playbook: Path) -> list[Path]:
    """The files whose content a run of `playbook` depends on (see docs/runbook-format.md)."""
    root = playbook.parent
    stem = playbook.stem
    files = {playbook}
    for sub in ("library", "module_utils", "tasks/common"):
        d = root / sub
        if d.is_dir():
            files.update(f for f in d.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
    files.update(
        f for f in root.rglob(f"{stem}*") if f.is_file() and "__pycache__" not in f.parts
    )
    for d in root.rglob(f"{stem}*"):
        if d.is_dir():
            files.update(f for f in d.rglob("*") if f.is_file())
    return sorted(files)


def playbook_sha256(playbook: Path) -> str:
    """One hash over the names and contents of every file the playbook depends on."""
    h = hashlib.sha256()
    root = playbook.parent
    for f in playbook_files(playbook):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()
