"""rotate_secret.yml end to end: moto Secrets Manager, real PostgreSQL roles, the fake kube API."""

from __future__ import annotations

import pytest

from tests.integration.rotate.conftest import Scenario, failed_msgs

pytestmark = pytest.mark.slow


def test_single_user_rotates_password(scenario: Scenario) -> None:
    """single-user: the new password logs in, the old one no longer does, AWSPREVIOUS keeps the old."""
    s = scenario
    s.setup_db()
    s.create_secrets()
    run = s.run(s.extra(client_request_token="tok-single-user-1"))
    assert run.rc == 0, run.output
    cur = s.secret()
    assert cur["username"] == s.user and cur["password"] != s.canary
    assert s.can_login(s.user, cur["password"])
    assert not s.can_login(s.user, s.canary)
    assert s.secret("AWSPREVIOUS")["password"] == s.canary
    assert not any("AWSPENDING" in st for st in s.stages().values())
    assert failed_msgs(run) == []
