"""Running one playbook with ansible-runner, as AWX drives it.

- A fresh 0700 private_data_dir per job (deleted afterwards), `ident` = the run id, artifacts kept under
  RUNBOOK_BOT_HOME/artifacts/<run id> (0700).
- Parameters reach the playbook as extra vars in env/extravars, each string tagged `!unsafe` so Ansible
  never templates it: `{{ lookup('pipe','id') }}` stays text. Never a command string.
- Timeouts (job and idle) in env/settings; `cancel_callback` always passed (polled every 0.5 s).
- One cheap event handler: it masks secret values in place (ansible-runner writes the same dict to
  job_events afterwards), turns task events into progress lines and keeps set_stats data.
- ansible-runner's own stdout file is suppressed (it would hold raw output); we write a redacted one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.errors import ExecutionError
from bot.execution.redaction import Redactor

log = logging.getLogger(__name__)
ProgressSink = Callable[["Progress"], None]


@dataclass(frozen=True)
class Progress:
    """One line of progress from a running playbook (already redacted)."""

    ident: str
    kind: str  # play | task | ok | changed | failed | skipped | unreachable | stats
    line: str
    task: str = ""
    host: str = ""


@dataclass
class Job:
    ident: str
    playbook: Path
    project_dir: Path
    inventory: Path
    extravars: dict[str, Any]
    secrets: list[str] = field(default_factory=list)
    timeout_seconds: int = 1800
    idle_timeout_seconds: int | None = None
    check: bool = False


@dataclass
class Outcome:
    status: str  # successful | failed | timeout | canceled
    rc: int | None
    stats: dict[str, Any]  # set_stats data (artifact_data)
    changes: list[dict[str, Any]]  # changed/failed task results (host, task, changed, failed, msg)
    failures: list[str]
    artifact_dir: Path | None


class _UnsafeDumper(yaml.SafeDumper):
    pass


def _unsafe_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    return dumper.represent_scalar("!unsafe", data, style="'" if "\n" not in data else "|")


def _plain_keys(dumper: yaml.SafeDumper, data: dict[Any, Any]) -> yaml.Node:
    """Variable names stay plain; only values are tagged."""
    pairs = [(dumper.represent_scalar("tag:yaml.org,2002:str", str(k)), dumper.represent_data(v))
             for k, v in data.items()]
    return yaml.MappingNode("tag:yaml.org,2002:map", pairs)


_UnsafeDumper.add_representer(str, _unsafe_str)
_UnsafeDumper.add_representer(dict, _plain_keys)


def write_extravars(path: Path, extravars: Mapping[str, Any]) -> None:
    """env/extravars as YAML with every string `!unsafe` (inert to Ansible templating)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.dump(dict(extravars), f, Dumper=_UnsafeDumper, allow_unicode=True, default_flow_style=False)


def _task_name(event_data: Mapping[str, Any]) -> str:
    return str(event_data.get("task") or event_data.get("name") or "")


def _result_message(res: Mapping[str, Any]) -> str:
    """One line (at most 300 characters) saying why a task failed.

    A message whose first line only introduces the rest ("Validation of arguments failed:" from
    validate_argument_spec, followed by the argument names) keeps the rest, joined with '; '.
    """
    for key in ("msg", "stderr", "reason", "module_stderr"):
        value = res.get(key)
        if value:
            lines = [ln.strip() for ln in str(value).strip().splitlines() if ln.strip()]
            if not lines:
                return ""
            text = lines[0]
            if text.endswith(":") and len(lines) > 1:
                text += " " + "; ".join(lines[1:])
            return text[:300]
    return ""


PROGRESS_FILE = "progress.txt"
FOLLOWED_KINDS = frozenset({"play", "task", "changed", "failed", "unreachable"})


def _followed_line(p: Progress) -> str:
    """A progress line as `status --follow` prints it (ansible-playbook's own banner style)."""
    if p.kind == "task":
        return f"TASK [{p.task}]"
    if p.kind == "play":
        return f"PLAY [{p.line.removeprefix('PLAY ')}]"
    return p.line


# Tasks of these actions only report to the bot (set_stats carries the plan, summary and result): they are
# the bot's channel, not steps of the runbook, so progress (CLI, Slack thread) does not show them.
BOT_CHANNEL_ACTIONS = frozenset({"ansible.builtin.set_stats", "set_stats"})


def bot_channel_task(event_data: Mapping[str, Any]) -> bool:
    """Is this event's task one that only reports to the bot (hidden from progress)?"""
    return str(event_data.get("resolved_action") or event_data.get("task_action") or "") in BOT_CHANNEL_ACTIONS


class _EventCollector:
    """The per-event handler: kept cheap (it runs for every Ansible event)."""

    def __init__(self, ident: str, redactor: Redactor, sink: ProgressSink | None, stdout_path: Path | None) -> None:
        self.ident, self.redactor, self.sink = ident, redactor, sink
        self.stats: dict[str, Any] = {}
        self.changes: list[dict[str, Any]] = []
        self.failures: list[str] = []
        # progress.txt (the lines progress shows, for `status --follow` on this host) is created before
        # stdout.txt, so whoever sees stdout.txt also finds progress.txt.
        self._progress = (open(stdout_path.with_name(PROGRESS_FILE), "a", encoding="utf-8", buffering=1)
                          if stdout_path else None)
        self._stdout = open(stdout_path, "a", encoding="utf-8", buffering=1) if stdout_path else None
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> bool:
        self.redactor.in_place(event)
        kind = event.get("event", "")
        data: Mapping[str, Any] = event.get("event_data") or {}
        if self._stdout is not None and event.get("stdout"):
            self._stdout.write(str(event["stdout"]) + "\n")
        progress: Progress | None = None
        if kind == "playbook_on_play_start":
            progress = Progress(self.ident, "play", f"PLAY {data.get('play', '')}")
        elif kind == "playbook_on_task_start" and not bot_channel_task(data):
            name = _task_name(data)
            progress = Progress(self.ident, "task", f"TASK {name}", task=name)
        elif kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_on_skipped"):
            res: Mapping[str, Any] = data.get("res") or {}
            host, name = str(data.get("host", "")), _task_name(data)
            ignored = bool(data.get("ignore_errors"))
            if kind == "runner_on_ok":
                status = "changed" if res.get("changed") else "ok"
            elif kind == "runner_on_failed":
                status = "failed" if not ignored else "ok"
            else:
                status = kind.removeprefix("runner_on_")
            msg = _result_message(res) if status in ("failed", "unreachable") else ""
            if status in ("changed", "failed", "unreachable"):
                with self._lock:
                    self.changes.append({"host": host, "task": name, "status": status})
                    if msg:
                        self.failures.append(f"{name} [{host}]: {msg}")
            progress = Progress(self.ident, status, f"{status}: [{host}] {name}" + (f": {msg}" if msg else ""),
                                task=name, host=host)
        elif kind == "playbook_on_stats":
            self.stats = dict(data.get("artifact_data") or {})
            progress = Progress(self.ident, "stats", "PLAY RECAP")
        if progress is not None and self._progress is not None and progress.kind in FOLLOWED_KINDS:
            self._progress.write(_followed_line(progress) + "\n")
        if progress is not None and self.sink is not None:
            try:
                self.sink(progress)
            except Exception:
                log.warning("progress subscriber failed", exc_info=True)
        return True

    def close(self) -> None:
        for f in (self._stdout, self._progress):
            if f is not None:
                f.close()


_WITHHELD_ENV = (
    "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "RUNBOOK_BOT_SECRET_KEY", "DATABASE_URL",
)


def _drop_command_env(artifact_dir: Path) -> None:
    """ansible-runner's `command` artifact records the whole environment of the child: keep argv and cwd."""
    path = artifact_dir / "command"
    if path.exists():
        try:
            data = json.loads(path.read_text())
            data.pop("env", None)
            path.write_text(json.dumps(data))
        except (ValueError, OSError):
            path.unlink(missing_ok=True)


def _error_lines(stdout: Path, limit: int = 3) -> list[str]:
    """`[ERROR]:` lines of a playbook that failed before any task (syntax, missing file, bad inventory)."""
    try:
        lines = stdout.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    errors = [ln.split("]:", 1)[-1].strip() for ln in lines if ln.startswith(("[ERROR]", "ERROR!"))]
    return [e[:300] for e in errors[:limit]]


class AnsibleRunner:
    """Runs Jobs through ansible_runner.run_async in fresh private data dirs."""

    def __init__(self, work_dir: Path, artifacts_dir: Path, *, ansible_config: Path | None = None) -> None:
        self.work_dir, self.artifacts_dir, self.ansible_config = work_dir, artifacts_dir, ansible_config
        for d in (work_dir, artifacts_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)

    def run(self, job: Job, *, on_progress: ProgressSink | None = None,
            should_cancel: Callable[[], bool] = lambda: False) -> Outcome:
        import ansible_runner  # heavy import, deferred until something runs

        private = Path(tempfile.mkdtemp(prefix=f"{job.ident}-", dir=self.work_dir))
        os.chmod(private, 0o700)
        keep_artifacts = not job.check
        artifact_root = self.artifacts_dir if keep_artifacts else private / "artifacts"
        artifact_dir = artifact_root / job.ident
        if artifact_dir.exists():
            shutil.rmtree(artifact_dir)
        redactor = Redactor(job.secrets)
        try:
            env_dir = private / "env"
            env_dir.mkdir(mode=0o700)
            write_extravars(env_dir / "extravars", job.extravars)
            settings: dict[str, Any] = {
                "job_timeout": job.timeout_seconds, "pexpect_timeout": 0.5, "suppress_output_file": True,
                "suppress_ansible_output": True,
            }
            if job.idle_timeout_seconds:
                settings["idle_timeout"] = job.idle_timeout_seconds
            (env_dir / "settings").write_text(yaml.safe_dump(settings))
            # The bot's own credentials are none of the playbook's business: blank them in its environment.
            envvars = {"ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0",
                       **{name: "" for name in _WITHHELD_ENV if name in os.environ}}
            if self.ansible_config is not None and self.ansible_config.exists():
                envvars["ANSIBLE_CONFIG"] = str(self.ansible_config)
            artifact_root.mkdir(parents=True, exist_ok=True)
            artifact_dir.mkdir(mode=0o700)
            collector = _EventCollector(job.ident, redactor, on_progress, artifact_dir / "stdout.txt")
            try:
                thread, runner = ansible_runner.run_async(
                    private_data_dir=str(private), project_dir=str(job.project_dir), playbook=str(job.playbook),
                    inventory=str(job.inventory), ident=job.ident, artifact_dir=str(artifact_root),
                    envvars=envvars, cmdline="--check --diff" if job.check else None,
                    event_handler=collector, cancel_callback=should_cancel, quiet=True,
                    settings=None, rotate_artifacts=0,
                )
                thread.join()
            except Exception as e:  # noqa: BLE001 - ansible-runner raises bare Exceptions for set-up errors
                raise ExecutionError(f"could not start ansible-playbook: {redactor.text(str(e))}") from None
            finally:
                collector.close()
            status = str(runner.status)
            if status == "failed" and not collector.failures:
                collector.failures.extend(_error_lines(artifact_dir / "stdout.txt"))
            outcome = Outcome(
                status=status if status in ("successful", "failed", "timeout", "canceled") else "failed",
                rc=runner.rc, stats=collector.stats, changes=collector.changes,
                failures=collector.failures, artifact_dir=artifact_dir if keep_artifacts else None,
            )
            if keep_artifacts:
                _drop_command_env(artifact_dir)
                redactor.scrub_tree(artifact_dir)
            return outcome
        finally:
            shutil.rmtree(private, ignore_errors=True)
