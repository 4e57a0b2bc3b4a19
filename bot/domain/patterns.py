"""Named value patterns: written once here, referred to by name from runbook front matter.

A parameter's `pattern:` is either one of these names (`pattern: k8s_namespace`) or a regular expression
of its own. The catalog resolves the name; `runbook-bot specs --write` copies the resolved expression into
the playbook argument specs, so the playbooks check the same expression without repeating it.
Every pattern is a full match (anchored with ^...$).
"""

from __future__ import annotations

import re

# Kubernetes object names (RFC 1123): a DNS label (namespaces, containers) and a DNS subdomain
# (Deployments, pods).
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?"
_HOST = r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}"
_SQL_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,62}"

PATTERNS: dict[str, str] = {
    "k8s_namespace": rf"^{_DNS_LABEL}$",
    "k8s_container": rf"^{_DNS_LABEL}$",
    "k8s_name": rf"^{_DNS_SUBDOMAIN}$",
    # Up to 20 comma-separated DNS labels (consumer Deployments restarted together).
    "k8s_label_list": rf"^{_DNS_LABEL}(,{_DNS_LABEL}){{0,19}}$",
    "inventory_host": rf"^{_HOST}$",
    # What a workload lock names: k8s/<namespace>/<deployment> or host/<inventory host>.
    "workload_target": rf"^(k8s/{_DNS_LABEL}/{_DNS_SUBDOMAIN}|host/{_HOST})$",
    "aws_secret_id": r"^(arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:)?[A-Za-z0-9/_+=.@-]{1,512}$",
    "s3_bucket": r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
    "s3_prefix": r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$",
    "sql_table": rf"^{_SQL_NAME}([.]{_SQL_NAME})?$",
}

# What a front matter `pattern:` value looks like when it means a name rather than an expression.
_NAME_LIKE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)+")


def resolve(value: str) -> str:
    """The regular expression that a front matter `pattern:` value stands for.

    Raises KeyError for a value shaped like a name (`snake_case`) that names no pattern: a typo must not
    silently become a literal expression.
    """
    if value in PATTERNS:
        return PATTERNS[value]
    if _NAME_LIKE.fullmatch(value):
        raise KeyError(f"unknown named pattern {value!r} (known: {', '.join(sorted(PATTERNS))})")
    return value
