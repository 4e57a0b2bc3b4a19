"""The SlackGroups port over `usergroups.users.list`, cached briefly (the operators file stays the authority)."""

from __future__ import annotations

import logging
import threading
import time

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

log = logging.getLogger(__name__)

# Errors meaning "this workspace (plan or token) has no user groups": the operators file alone decides.
NO_USER_GROUPS = frozenset({"paid_teams_only", "plan_upgrade_required", "feature_not_enabled",
                            "not_allowed_token_type", "missing_scope"})


class SlackGroupResolver:
    """Members of Slack user groups, cached for `ttl` seconds; None when the workspace has no user groups."""

    def __init__(self, client: WebClient, ttl: float = 60.0, error_ttl: float = 5.0) -> None:
        self.client, self.ttl, self.error_ttl = client, ttl, error_ttl
        self._cache: dict[str, tuple[float, frozenset[str] | None]] = {}
        self._lock = threading.Lock()

    def members(self, group_id: str) -> frozenset[str] | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(group_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        ttl = self.ttl
        result: frozenset[str] | None
        try:
            resp = self.client.usergroups_users_list(usergroup=group_id)
            result = frozenset(str(u) for u in (resp.get("users") or []))
        except SlackApiError as e:
            error = str(e.response.get("error", ""))
            if error in NO_USER_GROUPS:
                log.info("Slack user groups unavailable (%s): the operators file alone decides", error)
                result = None
            else:
                # Unknown group or a transient failure: nobody is a member (fail closed), retry soon.
                log.warning("usergroups.users.list %s failed: %s", group_id, error)
                result, ttl = frozenset(), self.error_ttl
        except Exception as e:  # noqa: BLE001 - network trouble must not approve anyone
            log.warning("usergroups.users.list %s failed: %s", group_id, e)
            result, ttl = frozenset(), self.error_ttl
        with self._lock:
            self._cache[group_id] = (now + ttl, result)
        return result
