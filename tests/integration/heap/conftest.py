"""Fixtures for the heap-snapshot runbook tests: moto's S3 server, real node processes, a playbook runner.

Everything real runs on 127.0.0.1 and is stopped on teardown: moto in server mode (the playbook reaches
it through the standard AWS_ENDPOINT_URL variable, as it would reach a real S3-compatible endpoint), and
`node` processes started with or without --heapsnapshot-signal=SIGUSR2.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.fakes.kube_api import FakeKubeAPI
from tests.support.paths import ROOT
from tests.support.pgcluster import free_port
from tests.support.playbooks import failed_messages
from tests.support.waiting import wait_for

PLAYBOOK = ROOT / "playbooks" / "heap_snapshot.yml"
BUCKET = "heap-test"
NODE = shutil.which("node") or "/usr/bin/node"

# A small service: keeps ~100k objects alive, counts the SIGUSR2 it sees (next to Node's own
# --heapsnapshot-signal handler) in the file named by argv[2], and says "ready" once allocated.
APP_JS = """
const fs = require('fs');
const countFile = process.argv[2];
let n = 0;
fs.writeFileSync(countFile, '0');
process.on('SIGUSR2', () => { n++; fs.writeFileSync(countFile, String(n)); });
const leak = [];
for (let i = 0; i < 100000; i++) leak.push({ i, s: 'leak-' + i });
console.log('ready');
setInterval(() => { leak.push(leak.length); }, 1000);
"""


@dataclass
class S3:
    endpoint: str
    bucket: str
    env: dict[str, str]

    def client(self) -> Any:
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )


@pytest.fixture
def s3() -> Iterator[S3]:
    """moto's S3 in server mode on 127.0.0.1 with one bucket; dummy credentials in the env."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
    s = S3(endpoint, BUCKET, env)
    # Threaded moto servers share moto's in-process backends: start every test from an empty S3.
    reset = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")  # noqa: S310 (our moto)
    urllib.request.urlopen(reset).close()  # noqa: S310 (http URL of our own moto server)
    s.client().create_bucket(Bucket=BUCKET)
    try:
        yield s
    finally:
        server.stop()


@dataclass
class NodeProc:
    proc: subprocess.Popen[str]
    diag_dir: Path
    count_file: Path
    script: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def snapshots(self) -> list[Path]:
        return sorted(self.diag_dir.glob("*.heapsnapshot"))

    def sigusr2_count(self) -> int:
        return int(self.count_file.read_text() or "0")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for_count(self, n: int, timeout: float = 10.0) -> None:
        """Wait until the service has counted n SIGUSR2 signals."""
        wait_for(lambda: self.sigusr2_count() == n, timeout=timeout,
                 what=lambda: f"{n} SIGUSR2 counted (the count is {self.sigusr2_count()})")


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., NodeProc]]:
    """Start real node processes running APP_JS; every one is killed on teardown."""
    procs: list[subprocess.Popen[str]] = []

    def start(*, flag: bool = True, via_env: bool = False, name: str = "app",
              extra_env: dict[str, str] | None = None, extra_args: tuple[str, ...] = ()) -> NodeProc:
        work = tmp_path / name
        diag = work / "diag"
        diag.mkdir(parents=True)
        script = work / "server.js"
        script.write_text(APP_JS)
        count = work / "sigusr2.count"
        options = ["--heapsnapshot-signal=SIGUSR2", f"--diagnostic-dir={diag}"] if flag else []
        env = {k: v for k, v in os.environ.items() if k != "NODE_OPTIONS"}
        env.update(extra_env or {})
        argv = [NODE, str(script), str(count), *extra_args]
        if via_env:
            env["NODE_OPTIONS"] = " ".join(options)
        else:
            argv[1:1] = options
        proc = subprocess.Popen(argv, cwd=work, env=env, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return NodeProc(proc, diag, count, script)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


@dataclass
class PlaybookRun:
    rc: int
    output: dict[str, Any]
    stdout: str
    stderr: str = ""
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> list[str]:
        """Messages of failed tasks."""
        return failed_messages(self.output)


@pytest.fixture
def run_playbook(tmp_path: Path) -> Callable[..., PlaybookRun]:
    """Run playbooks/heap_snapshot.yml for real with ansible-playbook and the JSON stdout callback."""

    def run(extra_vars: dict[str, Any], *, env: dict[str, str] | None = None, check: bool = False,
            inventory: Path | None = None) -> PlaybookRun:
        vars_file = tmp_path / "extra_vars.json"
        vars_file.write_text(json.dumps(extra_vars))
        argv = [str(Path(sys.executable).with_name("ansible-playbook")),
                "-i", str(inventory or ROOT / "inventory" / "local"), str(PLAYBOOK), "-e", f"@{vars_file}"]
        if check:
            argv.append("--check")
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
        full_env["ANSIBLE_SHOW_CUSTOM_STATS"] = "true"
        full_env["ANSIBLE_LOCAL_TEMP"] = str(tmp_path / "ansible-local")
        full_env["ANSIBLE_REMOTE_TEMP"] = str(tmp_path / "ansible-remote")
        full_env["TMPDIR"] = str(tmp_path)
        p = subprocess.run(argv, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=600)
        try:
            output = json.loads(p.stdout)
        except ValueError:
            output = {}
        return PlaybookRun(p.returncode, output, p.stdout, p.stderr, output.get("global_custom_stats", {}))

    return run


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[tuple[FakeKubeAPI, dict[str, str]]]:
    """The fake Kubernetes API on 127.0.0.1 and the env (KUBECONFIG) that points clients at it."""
    with FakeKubeAPI(ready_delay=0.1) as api:
        config = api.kubeconfig(tmp_path / "kubeconfig")
        yield api, {"KUBECONFIG": str(config)}
