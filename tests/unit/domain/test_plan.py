"""Plan hashes and canonical JSON."""

from __future__ import annotations

from bot.domain.plan import Plan, canonical_json, protected_params, secret_digest


def test_plan_hash_binds_every_part() -> None:
    """Changing parameters, playbook content or check output changes the hash and is named."""
    base = Plan("r", {"a": 1}, "p" * 64, ["x 1 -> 2"])
    assert base.hash == Plan("r", {"a": 1}, "p" * 64, ["x 1 -> 2"]).hash
    changed = Plan("r", {"a": 1}, "q" * 64, ["x 1 -> 3"])
    assert base.hash != changed.hash
    assert base.differences(changed)[0].startswith("playbook content")
    assert "check-mode output" in base.differences(changed)[1]


def test_secret_values_are_hmacs_in_plans() -> None:
    """Secrets enter plans as keyed digests: equal values match, the value itself is absent."""
    p = protected_params({"pw": "hunter2", "n": "ns"}, frozenset({"pw"}), b"k" * 32)
    assert p["pw"] == secret_digest(b"k" * 32, "pw", "hunter2")
    assert "hunter2" not in canonical_json(p)
    assert p["pw"] != secret_digest(b"j" * 32, "pw", "hunter2")


def test_canonical_json_is_order_independent() -> None:
    """Key order does not change the canonical form."""
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == canonical_json({"a": [1, {"c": 3, "d": 2}], "b": 1})
