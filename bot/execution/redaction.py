"""Redaction of secret parameter values from events, text and artifact files."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MASK = "********"


class Redactor:
    """Replaces every occurrence of the given secret values (and their JSON/repr escapes) with a mask."""

    def __init__(self, secrets: Iterable[Any]) -> None:
        variants: set[str] = set()
        for s in secrets:
            text = str(s)
            if not text:
                continue
            variants.update({text, json.dumps(text)[1:-1], repr(text)[1:-1]})
        ordered = sorted(variants, key=len, reverse=True)
        self._re = re.compile("|".join(re.escape(v) for v in ordered)) if ordered else None

    def __bool__(self) -> bool:
        return self._re is not None

    def text(self, value: str) -> str:
        return self._re.sub(MASK, value) if self._re is not None else value

    def value(self, obj: Any) -> Any:
        """A copy of `obj` (dicts, lists, strings) with secrets masked."""
        if self._re is None:
            return obj
        if isinstance(obj, str):
            return self._re.sub(MASK, obj)
        if isinstance(obj, dict):
            return {self.value(k): self.value(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.value(v) for v in obj]
        return obj

    def in_place(self, obj: dict[str, Any]) -> None:
        """Mask secrets inside `obj` itself (ansible-runner writes the same dict to disk afterwards)."""
        if self._re is None:
            return
        for k, v in list(obj.items()):
            obj[k] = self.value(v)

    def scrub_tree(self, root: Path) -> int:
        """Rewrite every file under `root` that contains a secret; returns how many were rewritten."""
        if self._re is None or not root.exists():
            return 0
        count = 0
        for path in root.rglob("*"):
            if not path.is_file() or path.is_symlink():
                continue
            try:
                data = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            clean = self._re.sub(MASK, data)
            if clean != data:
                path.write_text(clean, encoding="utf-8")
                count += 1
        return count
