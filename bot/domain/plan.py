"""Plans and their hashes: what approvers approve, bound to exactly what will run.

The plan hash covers the runbook name, the validated parameters (secret values as HMACs: the hash binds
the value without revealing it), the playbook's content hash, and the check-mode output when the runbook
supports check mode. The worker recomputes it when the run starts; any difference refuses the run.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, UTF-8 kept (the form the audit chain hashes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_hex(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def secret_digest(key: bytes, name: str, value: Any) -> str:
    """`hmac-sha256:<hex>` of a secret value: comparable across events, useless to a reader."""
    mac = hmac.new(key, f"{name}\0{value}".encode(), hashlib.sha256).hexdigest()
    return f"hmac-sha256:{mac[:32]}"


def protected_params(values: Mapping[str, Any], secret_names: frozenset[str], key: bytes) -> dict[str, Any]:
    """Parameters safe to store or show: secret values replaced by their HMAC."""
    return {k: (secret_digest(key, k, v) if k in secret_names else v) for k, v in values.items()}


@dataclass(frozen=True)
class Plan:
    runbook: str
    params: dict[str, Any]  # protected: secret values are HMACs
    playbook_sha256: str
    check_output: list[str] | None = None  # lines from check mode; None when the runbook has none
    check_changes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def hash(self) -> str:
        return sha256_hex(canonical_json(self.as_dict()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "runbook": self.runbook,
            "params": self.params,
            "playbook_sha256": self.playbook_sha256,
            "check_output": self.check_output,
            "check_changes": self.check_changes,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        return cls(
            runbook=data["runbook"], params=dict(data["params"]), playbook_sha256=data["playbook_sha256"],
            check_output=data.get("check_output"), check_changes=list(data.get("check_changes") or []),
        )

    def differences(self, other: Plan) -> list[str]:
        """What differs between this (approved) plan and `other` (now), in words."""
        out = []
        if self.runbook != other.runbook:
            out.append("runbook")
        if self.params != other.params:
            out.append("parameters")
        if self.playbook_sha256 != other.playbook_sha256:
            out.append(
                f"playbook content (approved {self.playbook_sha256[:12]}, now {other.playbook_sha256[:12]})"
            )
        if self.check_output != other.check_output or self.check_changes != other.check_changes:
            out.append("check-mode output (the target changed since approval)")
        return out
