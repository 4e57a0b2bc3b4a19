"""Pure helpers of the secret_rotation module (no AWS, no PostgreSQL)."""

from __future__ import annotations

from tests.support.playbooks import load_playbook_module

mod = load_playbook_module("library/secret_rotation.py")


def test_valid_token_is_kept() -> None:
    """A token AWS accepts (32-64 of [A-Za-z0-9_-]) is used as given."""
    tok = "0123456789abcdef0123456789abcdef"
    assert mod.normalize_token(tok) == tok


def test_short_token_maps_to_a_stable_uuid() -> None:
    """A spine run id is mapped to the same UUID every time, and different ids to different UUIDs."""
    a, b = mod.normalize_token("runbook-bot-run-7"), mod.normalize_token("runbook-bot-run-8")
    assert a == mod.normalize_token("runbook-bot-run-7") and a != b and len(a) == 36


def test_alternate_username_toggles_clone_suffix() -> None:
    """As the AWS multi-user template: app -> app_clone -> app."""
    assert mod.alternate_username({"username": "app"}) == "app_clone"
    assert mod.alternate_username({"username": "app_clone"}) == "app"


def test_alternate_username_from_secret_wins() -> None:
    """A secret's alternate_username names the other role explicitly."""
    assert mod.alternate_username({"username": "app_blue", "alternate_username": "app_green"}) == "app_green"


def test_generated_password_has_mixed_classes() -> None:
    """Generated passwords have the requested length and upper, lower case and digits."""
    pw = mod.gen_password(32)
    assert len(pw) == 32 and any(c.isupper() for c in pw) and any(c.islower() for c in pw)
    assert any(c.isdigit() for c in pw)
