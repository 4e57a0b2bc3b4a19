"""heap-snapshot runbook, host kind: a real node process, a real snapshot, moto's S3 server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request

import pytest

pytestmark = pytest.mark.slow


def _unused_pid() -> int:
    """A pid that no process has right now (a child that has exited and been reaped)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_snapshot_is_uploaded_and_downloadable_through_the_presigned_url(start_node, run_playbook, s3, tmp_path):
    """A SIGUSR2 snapshot of a flagged node process lands in S3 and the presigned URL serves a heap snapshot."""
    node = start_node()
    run = run_playbook({"pid": node.pid, "s3_bucket": s3.bucket, "s3_prefix": "snaps", "presign_expiry": 600,
                        "poll_interval": 0.2}, env=s3.env)
    assert run.rc == 0, run.failures or run.stderr
    result = run.stats["result"]
    assert result["key"].startswith("snaps/host/localhost/Heap.") and result["key"].endswith(".heapsnapshot")
    with urllib.request.urlopen(result["url"]) as resp:  # noqa: S310 (a presigned http URL to moto)
        body = resp.read()
    assert len(body) == int(result["size"]) > 0
    assert "meta" in json.loads(body)["snapshot"]
    assert any(result["url"] in line for line in run.stats["summary"])


def test_snapshot_file_is_deleted_on_the_host_and_the_process_keeps_running(start_node, run_playbook, s3, tmp_path):
    """After the upload the host's .heapsnapshot and the controller's copy are gone; the process lives on."""
    node = start_node()
    run = run_playbook({"pid": node.pid, "s3_bucket": s3.bucket, "poll_interval": 0.2}, env=s3.env)
    assert run.rc == 0, run.failures or run.stderr
    assert node.sigusr2_count() == 1
    assert node.snapshots() == []
    assert list(tmp_path.glob("heap-snapshot.*")) == []
    assert node.alive()


def test_process_match_and_node_options_find_the_process_and_its_diagnostic_dir(start_node, run_playbook, s3):
    """With the flags only in NODE_OPTIONS, process_match finds the process and the file is found in that dir."""
    node = start_node(via_env=True, name="svc-env")
    run = run_playbook({"process_match": r"svc-env/server\.js", "s3_bucket": s3.bucket, "poll_interval": 0.2},
                       env=s3.env)
    assert run.rc == 0, run.failures or run.stderr
    assert run.stats["result"]["source"].startswith(f"pid {node.pid} ")
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket)["Contents"]]
    assert keys == [run.stats["result"]["key"]]


def test_refuses_a_process_started_without_the_flag(start_node, run_playbook, s3):
    """A node process without --heapsnapshot-signal=SIGUSR2 is refused and never signalled."""
    node = start_node(flag=False)
    run = run_playbook({"pid": node.pid, "s3_bucket": s3.bucket}, env=s3.env)
    assert run.rc != 0
    assert any("not started with --heapsnapshot-signal=SIGUSR2" in m for m in run.failures), run.failures
    assert node.sigusr2_count() == 0 and node.alive()


def test_refuses_an_unknown_pid(run_playbook, s3):
    """A pid with no process behind it is refused with a message that says so."""
    pid = _unused_pid()
    run = run_playbook({"pid": pid, "s3_bucket": s3.bucket}, env=s3.env)
    assert run.rc != 0
    assert any(f"no process with pid {pid}" in m for m in run.failures), run.failures


def test_refuses_a_process_match_that_matches_two_processes(start_node, run_playbook, s3):
    """process_match must select exactly one process; two matches are refused and listed."""
    a, b = start_node(name="twin-a"), start_node(name="twin-b")
    run = run_playbook({"process_match": r"twin-./server\.js", "s3_bucket": s3.bucket}, env=s3.env)
    assert run.rc != 0
    assert any("it matches 2" in m for m in run.failures), run.failures
    assert a.sigusr2_count() == b.sigusr2_count() == 0


def test_check_mode_reports_the_plan_without_signalling(start_node, run_playbook, s3):
    """--check reports which process and where the file goes, sends no signal and writes no snapshot."""
    node = start_node()
    run = run_playbook({"pid": node.pid, "s3_bucket": s3.bucket, "s3_prefix": "snaps"}, env=s3.env, check=True)
    assert run.rc == 0, run.failures or run.stderr
    plan = run.stats["plan"]
    assert plan[0].startswith(f"send SIGUSR2 to pid {node.pid} (node server.js) on localhost")
    assert any(str(node.diag_dir) in line for line in plan)
    assert any(f"s3://{s3.bucket}/snaps/host/localhost/" in line for line in plan)
    assert any("frozen" in line for line in plan)
    assert node.sigusr2_count() == 0 and node.snapshots() == []
    assert "Contents" not in s3.client().list_objects_v2(Bucket=s3.bucket)


def test_check_mode_plan_is_deterministic(start_node, run_playbook, s3):
    """Two check runs against the same process give the same plan (it is hashed and compared by the spine)."""
    node = start_node()
    first = run_playbook({"pid": node.pid, "s3_bucket": s3.bucket}, env=s3.env, check=True)
    second = run_playbook({"pid": node.pid, "s3_bucket": s3.bucket}, env=s3.env, check=True)
    assert first.rc == second.rc == 0
    assert first.stats["plan"] == second.stats["plan"]


def test_refuses_when_the_diagnostic_dir_has_less_free_space_than_the_rss(start_node, run_playbook, s3, tmp_path):
    """A diagnostic dir on a 1 MiB filesystem is refused before signalling, naming RSS as the measure."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    node = start_node()
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tiny)]).returncode != 0:
        pytest.skip("this machine does not allow mounting tmpfs")
    try:
        node.diag_dir.rmdir()
        node.diag_dir.symlink_to(tiny)
        run = run_playbook({"pid": node.pid, "s3_bucket": s3.bucket}, env=s3.env)
    finally:
        subprocess.run(["umount", str(tiny)], check=True)
    assert run.rc != 0
    assert any("resident set size (RSS)" in m and "refusing" in m for m in run.failures), run.failures
    assert node.sigusr2_count() == 0


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"s3_prefix": "{{ lookup('pipe', 'id') }}"}, "s3_prefix must match"),
        ({"target_host": "no-such-host"}, "must be one inventory host"),
        ({"target": "host/localhost", "target_host": "other"}, "must agree"),
        ({"target": "host/localhost", "target_kind": "pod"}, "must agree"),
        ({"target": "k8s/prod"}, "target must match ^(k8s/"),
    ],
)
def test_refuses_invalid_parameters(run_playbook, s3, extra, needle):
    """Bad or inconsistent parameters fail before any process is touched."""
    run = run_playbook({"pid": 1, "s3_bucket": s3.bucket, **extra}, env=s3.env)
    assert run.rc != 0
    assert any(needle in m for m in run.failures), run.failures


def test_node_script_fixture_counts_signals(start_node):
    """The test service really counts SIGUSR2 (so a count of 0 above means no signal was sent)."""
    node = start_node()
    os.kill(node.pid, signal.SIGUSR2)
    node.wait_for_count(1)
    assert node.alive()


def test_failed_upload_keeps_the_snapshot_on_the_host_and_says_where(start_node, run_playbook, s3):
    """When the upload fails the host's snapshot is kept (not lost) and the summary names its path."""
    node = start_node()
    run = run_playbook({"pid": node.pid, "s3_bucket": "no-such-bucket", "poll_interval": 0.2}, env=s3.env)
    assert run.rc != 0
    (left,) = node.snapshots()
    assert any(str(left) in line and "not uploaded" in line for line in run.stats["summary"]), run.stats


def test_secrets_in_the_process_environment_and_arguments_never_reach_the_output(start_node, run_playbook, s3):
    """Only NODE_OPTIONS and the script name leave the host: a secret in the env or argv appears nowhere."""
    canary = "canary-7d1e0b52c4"
    node = start_node(extra_env={"DB_PASSWORD": canary}, extra_args=(f"--token={canary}",))
    run = run_playbook({"pid": node.pid, "s3_bucket": s3.bucket, "poll_interval": 0.2}, env=s3.env)
    assert run.rc == 0, run.failures or run.stderr
    assert canary not in run.stdout and canary not in run.stderr


def test_target_names_an_inventory_host_other_than_localhost(start_node, run_playbook, s3, tmp_path):
    """target=host/web-1 runs the process tasks on inventory host web-1 (here reached with a local connection)."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  hosts:\n    localhost: {ansible_connection: local, ansible_python_interpreter: "
        "'{{ ansible_playbook_python }}'}\n    web-1: {ansible_connection: local, ansible_python_interpreter: "
        "'{{ ansible_playbook_python }}'}\n"
    )
    node = start_node()
    run = run_playbook({"target": "host/web-1", "pid": node.pid, "s3_bucket": s3.bucket, "poll_interval": 0.2},
                       env=s3.env, inventory=inventory)
    assert run.rc == 0, run.failures or run.stderr
    assert run.stats["result"]["key"].startswith("heap-snapshots/host/web-1/Heap.")
    assert run.stats["result"]["source"] == f"pid {node.pid} (node server.js) on web-1"
    assert node.snapshots() == []
