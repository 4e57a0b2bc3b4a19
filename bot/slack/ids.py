"""Slack identifiers this app owns: action ids (fixed in design.md), modal callback ids, block ids."""

from __future__ import annotations

COMMAND = "/runbook"
ACTION_APPROVE = "runbook_approve"
ACTION_DENY = "runbook_deny"
VIEW_RUN = "runbook_run_modal"
PARAM_BLOCK_PREFIX = "param__"
PARAM_ACTION = "value"
