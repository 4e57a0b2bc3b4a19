"""runbook-bot: approved, audited Ansible runbooks for on-call engineers (Slack, CLI, scheduler)."""

__version__ = "0.1.0"
