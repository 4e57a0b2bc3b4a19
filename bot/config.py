"""Settings from the environment (names fixed in design.md) and the operators file."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from bot.domain.ids import OperatorName
from bot.domain.policy import Directory, Operator, slack_group_id
from bot.errors import ConfigError

_N = TypeVar("_N", int, float)


def _number_env(env: Mapping[str, str], name: str, default: _N, parse: Callable[[str], _N], what: str) -> _N:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {what}, got {raw!r}") from None


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    return _number_env(env, name, default, int, "a whole number")


def _float_env(env: Mapping[str, str], name: str, default: float) -> float:
    return _number_env(env, name, default, float, "a number")


PROJECT_MARKERS = ("runbook-bot.yaml", "runbooks")


def find_project_dir(cwd: Path | None = None) -> tuple[Path | None, str]:
    """The project directory the defaults (runbooks/, playbooks/, inventory/local, runbook-bot.yaml) point
    into, and how it was found (for error messages).

    The first of `cwd` and its parents holding runbook-bot.yaml or a runbooks/ directory; else the source
    checkout the package was installed from (an editable install, as `make setup` does).
    """
    cwd = Path.cwd() if cwd is None else cwd
    markers = " or ".join(f"{m}/" if m == "runbooks" else m for m in PROJECT_MARKERS)
    for directory in [cwd, *cwd.parents]:
        if (directory / "runbook-bot.yaml").is_file() or (directory / "runbooks").is_dir():
            return directory, f"project dir {directory}: the first of {cwd} and its parents with {markers}"
    installed = Path(__file__).resolve().parent.parent
    if (installed / "runbooks").is_dir():
        return installed, (f"project dir {installed}: the checkout runbook-bot was installed from (no {markers} "
                           f"in {cwd} or its parents)")
    return None, f"no project dir: no {markers} in {cwd} or its parents, nor in {installed}"


def _tracking_env(env: Mapping[str, str]) -> str:
    raw = env.get("RUNBOOK_BOT_PROCESS_TRACKING") or "auto"
    if raw not in ("auto", "cgroup2", "freezer", "environ"):
        raise ConfigError(f"RUNBOOK_BOT_PROCESS_TRACKING must be auto, cgroup2, freezer or environ, got {raw!r}")
    return raw


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str | None
    runbooks_dir: Path
    playbooks_dir: Path
    config_file: Path
    inventory: Path
    workers: int = 2
    heartbeat_seconds: float = 2.0
    stale_after_seconds: float = 30.0
    poll_seconds: float = 0.5
    slack_bot_token: str | None = None
    slack_signing_secret: str | None = None
    slack_app_token: str | None = None
    slack_api_url: str | None = None
    slack_approval_channel: str | None = None
    migration_url: str | None = None        # owner role for migrations (DATABASE_URL is the runtime role)
    audit_anchor_file: Path | None = None   # append-only anchor file (default: RUNBOOK_BOT_HOME/audit-anchors)
    audit_anchor_s3: str | None = None      # s3://bucket/prefix with Object Lock
    secret_key: str | None = field(default=None, repr=False)  # RUNBOOK_BOT_SECRET_KEY of the same environment
    project_search: str = ""  # where the project directory was looked for (defaults of the paths above)
    process_tracking: str = "auto"  # auto | cgroup2 | freezer | environ (bot.execution.processes)
    kill_grace_seconds: float = 5.0  # SIGTERM -> SIGKILL of a stopped run's processes

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("RUNBOOK_BOT_HOME") or Path.home() / ".runbook-bot").expanduser()
        names = ("RUNBOOK_BOT_RUNBOOKS", "RUNBOOK_BOT_PLAYBOOKS", "RUNBOOK_BOT_CONFIG", "RUNBOOK_BOT_INVENTORY")
        project, search = (None, "") if all(env.get(n) for n in names) else find_project_dir()
        base = project or Path.cwd()

        def path(name: str, default: str) -> Path:
            return Path(env.get(name) or base / default).resolve()

        return cls(
            home=home,
            database_url=env.get("DATABASE_URL") or None,
            runbooks_dir=path("RUNBOOK_BOT_RUNBOOKS", "runbooks"),
            playbooks_dir=path("RUNBOOK_BOT_PLAYBOOKS", "playbooks"),
            config_file=path("RUNBOOK_BOT_CONFIG", "runbook-bot.yaml"),
            inventory=path("RUNBOOK_BOT_INVENTORY", "inventory/local"),
            project_search=search,
            workers=_int_env(env, "RUNBOOK_BOT_WORKERS", 2),
            heartbeat_seconds=_float_env(env, "RUNBOOK_BOT_HEARTBEAT_SECONDS", 2.0),
            stale_after_seconds=_float_env(env, "RUNBOOK_BOT_STALE_AFTER_SECONDS", 30.0),
            poll_seconds=_float_env(env, "RUNBOOK_BOT_POLL_SECONDS", 0.5),
            slack_bot_token=env.get("SLACK_BOT_TOKEN") or None,
            slack_signing_secret=env.get("SLACK_SIGNING_SECRET") or None,
            slack_app_token=env.get("SLACK_APP_TOKEN") or None,
            slack_api_url=env.get("SLACK_API_URL") or None,
            slack_approval_channel=env.get("SLACK_APPROVAL_CHANNEL") or None,
            migration_url=env.get("RUNBOOK_BOT_MIGRATION_URL") or None,
            audit_anchor_file=Path(env.get("RUNBOOK_BOT_AUDIT_ANCHOR_FILE") or home / "audit-anchors").expanduser(),
            audit_anchor_s3=env.get("RUNBOOK_BOT_AUDIT_ANCHOR_S3") or None,
            secret_key=env.get("RUNBOOK_BOT_SECRET_KEY") or None,
            process_tracking=_tracking_env(env),
            kill_grace_seconds=_float_env(env, "RUNBOOK_BOT_KILL_GRACE_SECONDS", 5.0),
        )

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def work_dir(self) -> Path:
        return self.home / "work"


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ConfigError(f"operators file: {where} must be a list of names")
    return tuple(value)


def parse_directory(data: Any, source: str = "operators file") -> Directory:
    """The operators file's contents as a Directory; ConfigError names the bad key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a YAML mapping")
    unknown = set(data) - {"operators", "groups", "channels", "command_channels"}
    if unknown:
        raise ConfigError(f"{source}: unknown key {', '.join(sorted(unknown))}")
    operators: dict[str, Operator] = {}
    for name, spec in (data.get("operators") or {}).items():
        spec = spec or {}
        if not isinstance(spec, dict) or set(spec) - {"slack"}:
            raise ConfigError(f"{source}: operators.{name} takes only `slack: USER_ID`")
        operators[str(name)] = Operator(OperatorName(str(name)), spec.get("slack"))
    groups = {str(g): _str_list(m, f"groups.{g}") for g, m in (data.get("groups") or {}).items()}
    for g, members in groups.items():
        for m in members:
            if slack_group_id(m) is None and m not in operators:
                raise ConfigError(f"{source}: groups.{g} names {m!r}, which is not under operators")
    channels = data.get("channels") or {}
    if not isinstance(channels, dict):
        raise ConfigError(f"{source}: channels must be a mapping")
    return Directory(
        operators=operators, groups=groups, channels={str(k): str(v) for k, v in channels.items()},
        command_channels=_str_list(data.get("command_channels") or [], "command_channels"),
    )


def load_directory(path: Path) -> Directory:
    if not path.exists():
        raise ConfigError(
            f"operators file {path} does not exist: create it (see README, 'Operators file') "
            "or set RUNBOOK_BOT_CONFIG"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {str(e).splitlines()[0]}") from None
    return parse_directory(data, str(path))
