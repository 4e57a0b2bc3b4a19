"""Keys: one master key (env RUNBOOK_BOT_SECRET_KEY, or a 0600 file under RUNBOOK_BOT_HOME) from which
the Fernet key for run secrets, the HMAC key for audit digests and the MAC key of audit anchors are
derived.

Several workers sharing one database must share the key: set RUNBOOK_BOT_SECRET_KEY on all of them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from bot.errors import ConfigError


@dataclass(frozen=True)
class Keys:
    master: bytes

    @classmethod
    def load(cls, home: Path, env: Mapping[str, str] | None = None) -> Keys:
        env = os.environ if env is None else env
        raw = env.get("RUNBOOK_BOT_SECRET_KEY")
        if raw:
            return cls(hashlib.sha256(raw.encode()).digest())
        path = home / "secret.key"
        if not path.exists():
            home.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        text = path.read_text().strip()
        if len(text) < 32:
            raise ConfigError(f"{path} is too short to be a key: delete it to make a new one")
        return cls(hashlib.sha256(text.encode()).digest())

    def _derive(self, purpose: str) -> bytes:
        return hmac.new(self.master, purpose.encode(), hashlib.sha256).digest()

    @property
    def audit_hmac(self) -> bytes:
        return self._derive("audit-hmac")

    @property
    def event_mac_key(self) -> bytes:
        """MACs the `requested` and `approved` audit events, so the worker can tell them from events forged
        by someone who holds only the database credentials (bot.storage.runs.approval_record)."""
        return self._derive("audit-event-mac")

    @property
    def anchor_hmac(self) -> bytes:
        """MACs audit anchors (bot.storage.anchors): the database never sees it."""
        return self._derive("audit-anchor")

    def _fernet(self) -> Fernet:
        return Fernet(base64.urlsafe_b64encode(self._derive("run-secrets")))

    def seal(self, values: Mapping[str, Any]) -> bytes:
        return self._fernet().encrypt(json.dumps(dict(values)).encode())

    def open(self, token: bytes) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self._fernet().decrypt(bytes(token)))
        except InvalidToken:
            raise ConfigError(
                "cannot decrypt this run's secret parameters: this worker's RUNBOOK_BOT_SECRET_KEY differs "
                "from the requester's"
            ) from None
        return data


def event_mac(key: bytes, action: str, run_id: int, *fields: object) -> str:
    """The MAC of one `requested`/`approved` event's meaning (run, actor, plan hash, ...)."""
    text = "|".join(["runbook-bot event v1", action, str(run_id), *("" if f is None else str(f) for f in fields)])
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
