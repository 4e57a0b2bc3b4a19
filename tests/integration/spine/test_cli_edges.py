"""The runbook-bot command at its edges: free text that could forge a field, odd arguments, unwritable or
full disks, closed pipes, empty lists, help text and approval counts nobody can reach."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.support.paths import ROOT
from tests.support.spine import cli

pytestmark = pytest.mark.slow

FORGED = "INC-1\n  approvals: approved by boss\n  plan hash: 000000000000"


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("runbook-bot: error: ")
    assert "Traceback" not in err
    return err


def _count(env: dict[str, str], table: str) -> int:
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def test_reason_with_a_newline_is_refused_and_nothing_is_requested(spine_env: dict[str, str]) -> None:
    """--reason with a newline (a forged approvals line) is one error line, and no run or event is written."""
    err = _one_line_error(cli(spine_env, "request", "echo", "target=api", "--reason", FORGED))
    assert "reason: U+000A (newline) is not allowed" in err
    assert _count(spine_env, "runs") == 0 and _count(spine_env, "audit_events") == 0


def test_comment_with_an_escape_sequence_is_refused(spine_env: dict[str, str]) -> None:
    """--comment with ESC (it could hide text on a terminal) is refused; the run stays pending."""
    run_id = cli(spine_env, "request", "echo", "target=api").stdout.strip()
    err = _one_line_error(cli(spine_env, "approve", run_id, "--comment", "ok\x1b[8m hidden", user="bob"))
    assert "comment: U+001B" in err
    assert _count(spine_env, "approvals") == 0
    assert json.loads(cli(spine_env, "status", run_id, "--json").stdout)["state"] == "pending_approval"


def test_stored_forged_reason_shows_on_one_line(spine_env: dict[str, str]) -> None:
    """A reason already in the database with a newline and ESC is shown quoted and escaped by status."""
    run_id = cli(spine_env, "request", "echo", "target=api").stdout.strip()
    with psycopg.connect(spine_env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("UPDATE runs SET reason = %s WHERE id = %s", (FORGED + "\x1b[8m", int(run_id)))
    out = cli(spine_env, "status", run_id).stdout
    assert sum(1 for ln in out.splitlines() if ln.lstrip().startswith("approvals:")) == 1
    assert sum(1 for ln in out.splitlines() if ln.lstrip().startswith("plan hash:")) == 1
    assert '  reason: "INC-1\\n  approvals: approved by boss' in out and "\x1b" not in out


def test_parameter_error_comes_before_the_plan(spine_env: dict[str, str]) -> None:
    """A bad parameter of a check-mode runbook is refused before 'computing the plan' is printed."""
    proc = cli(spine_env, "request", "planned", "value=NOT OK")
    assert "does not match the pattern" in _one_line_error(proc)
    assert "computing the plan" not in proc.stderr


def test_status_and_runs_mask_secrets(spine_env: dict[str, str]) -> None:
    """`status` and `runs` show a secret parameter as a mask, not its stored HMAC."""
    run_id = cli(spine_env, "request", "echo", "target=api", "token=s3cr3t-value").stdout.strip()
    for out in (cli(spine_env, "status", run_id).stdout, cli(spine_env, "runs").stdout):
        assert "token=••••••" in out
        assert "hmac-sha256" not in out and "s3cr3t-value" not in out
    as_json = [json.loads(cli(spine_env, "status", run_id, "--json").stdout),
               *json.loads(cli(spine_env, "runs", "--json").stdout)]
    assert [r["params"]["token"] for r in as_json] == ["••••••", "••••••"]


def test_denied_and_cancelled_runs_say_who(spine_env: dict[str, str]) -> None:
    """status of a denied run names the denier and comment; of a cancelled run, who cancelled it."""
    denied = cli(spine_env, "request", "echo", "target=api").stdout.strip()
    assert cli(spine_env, "deny", denied, "--comment", "not now", user="bob").returncode == 0
    assert 'approvals: denied by bob ("not now"); 0 of 1 approvals' in cli(spine_env, "status", denied).stdout
    cancelled = cli(spine_env, "request", "echo", "target=web").stdout.strip()
    assert cli(spine_env, "cancel", cancelled, user="carol").returncode == 0
    out = cli(spine_env, "status", cancelled).stdout
    assert "approvals: 0 of 1 approvals; cancelled by carol" in out
    assert "no approval required" not in out
    assert json.loads(cli(spine_env, "status", cancelled, "--json").stdout)["cancelled_by"] == "carol"


def test_request_that_can_never_be_approved_is_refused(spine_env: dict[str, str], tmp_path: Path) -> None:
    """Two approvals from a group holding only the requester and one colleague: refused at request time."""
    ops = tmp_path / "operators.yaml"
    ops.write_text("operators: {alice: {}, bob: {}}\ngroups: {sre: [alice, bob], security: [alice, bob]}\n")
    env = {**spine_env, "RUNBOOK_BOT_CONFIG": str(ops)}
    err = _one_line_error(cli(env, "request", "quorum", "target=api"))
    assert "quorum needs 2 approvals from group:sre, but only 1 operator(s) other than you can approve (bob)" in err
    assert _count(env, "runs") == 0


@pytest.mark.parametrize(("args", "fragment"), [
    (("status", "²"), "expected a run id"),
    (("approve", "1x"), "expected a run id"),
    (("runs", "--limit", "-1"), "--limit: expected a whole number from 1 to 1000, got '-1'"),
    (("runs", "--limit", "0"), "from 1 to 1000"),
    (("worker", "--concurrency", "0"), "--concurrency: expected a whole number from 1 to 64"),
])
def test_bad_arguments_are_one_line(spine_env: dict[str, str], args: tuple[str, ...], fragment: str) -> None:
    """Arguments argparse refuses are one line (no usage block), exit 2, no traceback."""
    assert fragment in _one_line_error(cli(spine_env, *args))


def test_empty_runs_says_so(spine_env: dict[str, str]) -> None:
    """`runs` with no runs says 'no runs yet' instead of printing nothing."""
    proc = cli(spine_env, "runs")
    assert proc.returncode == 0 and "no runs yet" in proc.stdout


def _option_help(help_text: str, option: str) -> str:
    """The description argparse prints for `option` in a --help text ('' when it has none)."""
    section = help_text.split("options:", 1)[1]
    for entry in re.split(r"\n  (?=-)", section):
        words = entry.split()
        if option in (w.rstrip(",") for w in words[:3]):
            return " ".join(w for w in words if not (w.startswith("-") or w.rstrip(",").isupper()))
    raise AssertionError(f"{option} not in the help")


def test_every_option_has_help(spine_env: dict[str, str]) -> None:
    """--reason, --json, --comment, --http, --concurrency and --limit say what they do in --help."""
    for verb, option in [("request", "--reason"), ("request", "--json"), ("approve", "--comment"),
                         ("serve", "--http"), ("worker", "--concurrency"), ("runs", "--limit"), ("runs", "--json")]:
        described = _option_help(cli(spine_env, verb, "--help").stdout, option)
        assert len(described.split()) >= 3, f"{verb} {option}: {described!r}"


def test_show_of_a_runbook_without_approval_says_none_required(spine_env: dict[str, str]) -> None:
    """`show db-connections` says 'approval: none required', not '0 of nobody'."""
    env = {**spine_env, "RUNBOOK_BOT_RUNBOOKS": str(ROOT / "runbooks"),
           "RUNBOOK_BOT_PLAYBOOKS": str(ROOT / "playbooks")}
    out = cli(env, "show", "db-connections").stdout
    assert "approval: none required" in out and "nobody" not in out


def test_home_under_a_file_is_one_line_naming_the_path(spine_env: dict[str, str], tmp_path: Path) -> None:
    """RUNBOOK_BOT_HOME below a regular file: one line with the path and why, exit 2, no traceback."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    err = _one_line_error(cli({**spine_env, "RUNBOOK_BOT_HOME": str(blocker / "home")}, "runs"))
    assert str(blocker / "home") in err and "Not a directory" in err


def test_unwritable_home_is_one_line_naming_the_path(spine_env: dict[str, str], tmp_path: Path) -> None:
    """A 0500 RUNBOOK_BOT_HOME the user cannot write: one line naming the path and why, exit 2.

    As root (who may write anything) the command runs in a user namespace (`unshare -r`) and the home
    belongs to an unmapped user, so the kernel refuses the write exactly as it would for a normal user.
    """
    home = tmp_path / "ro-home"
    home.mkdir()
    env = {**spine_env, "RUNBOOK_BOT_HOME": str(home)}
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("unshare") is None or subprocess.run(["unshare", "-r", "true"], check=False).returncode:
            pytest.skip("root without user namespaces: cannot be refused a write")
        os.chown(home, 65534, 65534)
        prefix = ["unshare", "-r"]
    home.chmod(0o500)
    full = {**os.environ, **env, "LOGNAME": "alice", "USER": "alice"}
    proc = subprocess.run([*prefix, sys.executable, "-m", "bot.cli", "runs"], env=full, capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    err = _one_line_error(proc)
    assert str(home) in err and "Permission denied" in err


def test_full_disk_is_one_line_naming_the_file(spine_env: dict[str, str]) -> None:
    """Writing to a full device (ENOSPC, /dev/full) is one line naming the file and why, exit 2."""
    cli(spine_env, "request", "echo", "target=api")
    err = _one_line_error(cli(spine_env, "audit", "export", "--output", "/dev/full"))
    assert "/dev/full: No space left on device" in err


def test_export_into_a_closed_pipe_ends_quietly(spine_env: dict[str, str]) -> None:
    """`audit export | head` whose reader is gone ends without a BrokenPipeError traceback."""
    cli(spine_env, "request", "echo", "target=api")
    env = {**os.environ, **spine_env, "LOGNAME": "alice"}
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "audit", "export"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader went away before the first line
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 141


def test_init_writes_enough_approvers_for_every_runbook(tmp_path: Path) -> None:
    """`init` writes an operators file in which every shipped runbook's approval count is reachable."""
    from bot.catalog_files import load_catalog
    from bot.config import load_directory
    from bot.domain.policy import eligible_approvers

    path = tmp_path / "runbook-bot.yaml"
    env = {"RUNBOOK_BOT_CONFIG": str(path), "RUNBOOK_BOT_RUNBOOKS": str(ROOT / "runbooks"),
           "RUNBOOK_BOT_PLAYBOOKS": str(ROOT / "playbooks")}
    proc = cli(env, "init", user="newcomer")
    assert proc.returncode == 0, proc.stderr
    directory = load_directory(path)
    me = directory.operator("newcomer")
    assert {"second-approver", "third-approver"} <= set(directory.operators)  # the README's tour names the first
    for rb in load_catalog(ROOT / "runbooks", ROOT / "playbooks"):
        eligible = eligible_approvers(directory, rb, me)
        assert eligible is not None and len(eligible) >= rb.approval.required, rb.name


def test_init_names_the_catalogs_groups_and_refuses_without_a_catalog(tmp_path: Path) -> None:
    """`init` puts you in the groups the runbooks name (none hard-coded); with no readable catalog it says so in
    one line, exit 2, and writes nothing."""
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    (tmp_path / "p.yml").write_text("- hosts: localhost\n")
    (runbooks / "purge.md").write_text("---\nname: purge\ntitle: Purge\nplaybook: p.yml\napproval:\n  required: 1\n"
                                       "  approvers: [group:cdn-oncall]\n  requesters: [group:support]\n---\nGuide.\n")
    path = tmp_path / "runbook-bot.yaml"
    env = {"RUNBOOK_BOT_CONFIG": str(path), "RUNBOOK_BOT_RUNBOOKS": str(runbooks),
           "RUNBOOK_BOT_PLAYBOOKS": str(tmp_path)}
    proc = cli(env, "init", user="newcomer")
    assert proc.returncode == 0, proc.stderr
    from bot.config import load_directory

    assert sorted(load_directory(path).groups) == ["cdn-oncall", "support"]
    path.unlink()
    missing = cli({**env, "RUNBOOK_BOT_RUNBOOKS": str(tmp_path / "nowhere")}, "init", user="newcomer")
    err = _one_line_error(missing)
    assert "nowhere" in err and "RUNBOOK_BOT_RUNBOOKS" in err and "nothing was written" in err
    assert not path.exists()


def test_progress_leaves_out_the_tasks_that_report_to_the_bot(spine_env: dict[str, str]) -> None:
    """The worker's and `status --follow`'s task lines show the runbook's steps, not its set_stats report."""
    run_id = cli(spine_env, "request", "sleeper", "seconds=0").stdout.strip()
    work = cli(spine_env, "worker", "--once")
    assert f"[run {run_id}] TASK Sleep" in work.stdout, work.stdout
    assert "TASK Report" not in work.stdout
    follow = cli(spine_env, "status", run_id, "--follow")
    assert follow.returncode == 0, follow.stderr
    assert f"[run {run_id}] TASK [Sleep]" in follow.stdout and "TASK [Report]" not in follow.stdout
    assert "TASK [Report]" in cli(spine_env, "status", run_id, "--output").stdout  # the full output keeps it
