"""Running one playbook with ansible-runner, as AWX drives it.

- A fresh 0700 private_data_dir per job (deleted afterwards), `ident` = the run id, artifacts kept under
  RUNBOOK_BOT_HOME/artifacts/<run id> (0700).
- Parameters reach the playbook as extra vars in env/extravars, each string tagged `!unsafe` so Ansible
  never templates it: `{{ lookup('pipe','id') }}` stays text. Never a command string.
- Cancel, timeouts (job and idle) and worker shutdown are enforced here, not by ansible-runner: its
  cancel_callback/job_timeout kill only the pexpect child's process group, and ansible-playbook forks task
  processes into groups and sessions of their own. Each job runs inside a RunProcesses unit
  (bot.execution.processes: its own cgroup, else an environment marker) that is ended as a whole, and a
  job returns only once nothing of it is alive (leftovers of a finished playbook are ended too).
- One cheap event handler: it masks secret values in place (ansible-runner writes the same dict to
  job_events afterwards), turns task events into progress lines and keeps set_stats data.
- ansible-runner's own stdout file is suppressed (it would hold raw output); we write a redacted one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.errors import ExecutionError
from bot.execution.processes import RunProcesses, choose_tracking
from bot.execution.redaction import Redactor

log = logging.getLogger(__name__)
ProgressSink = Callable[["Progress"], None]
ProcessesSink = Callable[[RunProcesses], None]


@dataclass(frozen=True)
class StopRequest:
    """Why a running job must stop: an operator's cancel, or the worker shutting down (`why` says how)."""

    kind: str  # cancel | shutdown
    why: str = ""


StopCheck = Callable[[], "StopRequest | None"]


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
    status: str  # successful | failed | timeout | canceled | interrupted (worker shutdown)
    rc: int | None
    stats: dict[str, Any]  # set_stats data (artifact_data)
    changes: list[dict[str, Any]]  # changed/failed task results (host, task, changed, failed, msg)
    failures: list[str]
    artifact_dir: Path | None
    stop_why: str = ""  # for interrupted: why the worker stopped


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
        self.last_event = time.monotonic()

    def __call__(self, event: dict[str, Any]) -> bool:
        self.last_event = time.monotonic()
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
    "RUNBOOK_BOT_MIGRATION_URL",  # the owner role's credentials: a playbook must never see them
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


def playbook_search_path(environ: Mapping[str, str] | None = None) -> str:
    """PATH for ansible-playbook: the scripts directory of the Python environment the bot runs in first.

    `make run` without an activated venv, or `runbook-bot` installed with pip and run from any shell,
    starts the bot with a PATH that may not contain that environment's ansible-playbook (nor kubectl or
    temporal from their wheels). Raises ExecutionError naming where it looked when there is none at all.
    """
    environ = os.environ if environ is None else environ
    inherited = environ.get("PATH", os.defpath)
    own: list[str] = []
    for candidate in (os.path.dirname(sys.executable), sysconfig.get_path("scripts"),
                      sysconfig.get_path("scripts", f"{os.name}_user")):
        if candidate and candidate not in own and os.access(os.path.join(candidate, "ansible-playbook"), os.X_OK):
            own.append(candidate)
    path = os.pathsep.join([*own[:1], inherited]) if own else inherited
    if shutil.which("ansible-playbook", path=path) is None:
        raise ExecutionError(
            f"ansible-playbook not found in {os.path.dirname(sys.executable)} (this Python's environment) or "
            f"PATH ({inherited}): install runbook-bot with its dependencies (make setup, or pip install .)"
        )
    return path


def _drop_secret_files(artifact_dir: Path) -> None:
    """What a playbook killed mid-run leaves with raw values: the callback's partial events, env lists."""
    _drop_command_env(artifact_dir)
    for path in artifact_dir.rglob("*"):
        if path.is_file() and (path.name.endswith("-partial") or path.name in ("env", "env.list")):
            path.unlink(missing_ok=True)


class AnsibleRunner:
    """Runs Jobs through ansible-runner in fresh private data dirs, each inside its own RunProcesses."""

    def __init__(self, work_dir: Path, artifacts_dir: Path, *, ansible_config: Path | None = None,
                 inventory_defaults: Callable[[], Mapping[str, Any]] | None = None,
                 tracking: str = "auto", kill_grace_seconds: float = 5.0) -> None:
        self.work_dir, self.artifacts_dir, self.ansible_config = work_dir, artifacts_dir, ansible_config
        # Group `all` variables this bot knows about its own machine (its embedded database, the demo
        # stanza), read per run: an inventory source given BEFORE the job's inventory, which overrides them.
        self.inventory_defaults = inventory_defaults or dict
        for d in (work_dir, artifacts_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        self.tracking, self._cgroup_parent = choose_tracking(tracking)
        self.kill_grace_seconds = kill_grace_seconds
        log.info("run processes are tracked by %s%s", self.tracking,
                 f" under {self._cgroup_parent}" if self._cgroup_parent else " (environment marker only)")

    def end(self, processes: RunProcesses) -> None:
        """End every process of a run (TERM, grace, KILL); returns only once none is alive."""
        while processes.end(self.kill_grace_seconds):
            time.sleep(1.0)  # stuck in the kernel (D state): the run stays running, its lock held, until it dies
        processes.release()

    def discard_run_files(self, ident: str, secrets: list[str]) -> None:
        """After a crashed worker's run was ended: its private data dirs go, its artifacts lose raw values."""
        for private in self.work_dir.glob(f"{ident}-*"):
            shutil.rmtree(private, ignore_errors=True)
        artifact_dir = self.artifacts_dir / ident
        if artifact_dir.is_dir():
            _drop_secret_files(artifact_dir)
            Redactor(secrets).scrub_tree(artifact_dir)

    def run(self, job: Job, *, on_progress: ProgressSink | None = None, should_stop: StopCheck = lambda: None,
            on_processes: ProcessesSink | None = None) -> Outcome:
        """Run the job to its end (or stop it); `on_processes` learns where its processes are before any starts."""
        from ansible_runner.interface import init_runner  # heavy import, deferred until something runs

        private = Path(tempfile.mkdtemp(prefix=f"{job.ident}-", dir=self.work_dir))
        os.chmod(private, 0o700)
        keep_artifacts = not job.check
        artifact_root = self.artifacts_dir if keep_artifacts else private / "artifacts"
        artifact_dir = artifact_root / job.ident
        if artifact_dir.exists():
            shutil.rmtree(artifact_dir)
        redactor = Redactor(job.secrets)
        processes = RunProcesses.create(job.ident, self.tracking, self._cgroup_parent)
        try:
            if on_processes is not None:
                on_processes(processes)  # recorded before anything runs, so a crash leaves it findable
            env_dir = private / "env"
            env_dir.mkdir(mode=0o700)
            write_extravars(env_dir / "extravars", job.extravars)
            # No job_timeout/idle_timeout for ansible-runner: it would kill only the pexpect child's group.
            settings: dict[str, Any] = {"pexpect_timeout": 0.5, "suppress_output_file": True,
                                        "suppress_ansible_output": True}
            (env_dir / "settings").write_text(yaml.safe_dump(settings))
            # The bot's own credentials are none of the playbook's business: blank them in its environment.
            envvars = {"ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0", "PATH": playbook_search_path(),
                       **{name: "" for name in _WITHHELD_ENV if name in os.environ}, **processes.env()}
            if self.ansible_config is not None and self.ansible_config.exists():
                envvars["ANSIBLE_CONFIG"] = str(self.ansible_config)
            inventory: str | list[str] = str(job.inventory)
            facts = dict(self.inventory_defaults())
            if facts:
                defaults = private / "runbook-bot-defaults.yml"
                with open(defaults, "w", encoding="utf-8") as f:  # values `!unsafe`: never templated
                    yaml.dump({"all": {"vars": facts}}, f, Dumper=_UnsafeDumper, default_flow_style=False)
                inventory = [str(defaults), str(job.inventory)]
            artifact_root.mkdir(parents=True, exist_ok=True)
            artifact_dir.mkdir(mode=0o700)
            collector = _EventCollector(job.ident, redactor, on_progress, artifact_dir / "stdout.txt")
            try:
                try:
                    runner = init_runner(
                        private_data_dir=str(private), project_dir=str(job.project_dir), playbook=str(job.playbook),
                        inventory=inventory, ident=job.ident, artifact_dir=str(artifact_root),
                        envvars=envvars, cmdline="--check --diff" if job.check else None,
                        event_handler=collector, cancel_callback=lambda: False, quiet=True,
                        settings=None, rotate_artifacts=0,
                    )
                except Exception as e:  # noqa: BLE001 - ansible-runner raises bare Exceptions for set-up errors
                    raise ExecutionError(f"could not start ansible-playbook: {redactor.text(str(e))}") from None
                runner.config.command = processes.wrap(list(runner.config.command))
                thread = threading.Thread(target=runner.run, name=f"ansible-{job.ident}", daemon=True)
                thread.start()
                stopped = self._supervise(job, thread, processes, collector, should_stop)
            finally:
                collector.close()
            status = stopped.kind if stopped is not None else str(runner.status)
            if status == "failed" and not collector.failures:
                collector.failures.extend(_error_lines(artifact_dir / "stdout.txt"))
            outcome = Outcome(
                status=status if status in ("successful", "failed", "timeout", "canceled", "interrupted")
                else "failed",
                rc=runner.rc, stats=collector.stats, changes=collector.changes,
                failures=collector.failures, artifact_dir=artifact_dir if keep_artifacts else None,
                stop_why=stopped.why if stopped is not None else "",
            )
            if keep_artifacts:
                _drop_command_env(artifact_dir)
                redactor.scrub_tree(artifact_dir)
            return outcome
        finally:
            self.end(processes)  # also after a set-up error: nothing of the job outlives run()
            shutil.rmtree(private, ignore_errors=True)

    def _supervise(self, job: Job, thread: threading.Thread, processes: RunProcesses,
                   collector: _EventCollector, should_stop: StopCheck) -> _Stopped | None:
        """Wait for the playbook; on cancel, shutdown or a timeout end its whole process tree."""
        started = time.monotonic()
        stopped: _Stopped | None = None
        while True:
            thread.join(0.25)
            if not thread.is_alive():
                break
            if stopped is not None:
                continue
            request = should_stop()
            now = time.monotonic()
            if request is not None:
                stopped = _Stopped("canceled" if request.kind == "cancel" else "interrupted", request.why)
            elif job.timeout_seconds and now - started > job.timeout_seconds:
                stopped = _Stopped("timeout", f"ran past its timeout ({job.timeout_seconds}s)")
            elif job.idle_timeout_seconds and now - collector.last_event > job.idle_timeout_seconds:
                stopped = _Stopped("timeout", f"no output for {job.idle_timeout_seconds}s (idle timeout)")
            if stopped is not None:
                log.info("job %s: %s; ending its processes", job.ident, stopped.why or stopped.kind)
                self.end(processes)
        # The playbook is over; whatever it left behind (background tasks, daemons) belongs to the run too.
        self.end(processes)
        return stopped


@dataclass(frozen=True)
class _Stopped:
    kind: str  # canceled | interrupted | timeout (ansible-runner's status words)
    why: str
