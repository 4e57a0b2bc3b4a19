"""How the heap-snapshot modules read Node's options (pure functions, no processes)."""

from __future__ import annotations

import pytest

from tests.support.module_utils import module_util

hs = module_util("heap_snapshot_node")

def test_flag_after_the_script_is_an_app_argument_not_a_node_option():
    """`node app.js --heapsnapshot-signal=SIGUSR2` passes the flag to the app, so it does not count."""
    settings = hs.snapshot_settings(["node", "app.js", "--heapsnapshot-signal=SIGUSR2"], None)
    assert settings["signal"] is None
    assert hs.refusal(settings, "pid 1") is not None


def test_option_values_given_as_separate_arguments_are_read():
    """`-r x --heapsnapshot-signal SIGUSR2 --diagnostic-dir /d app.js` gives SIGUSR2 and /d."""
    argv = ["node", "-r", "dotenv/config", "--heapsnapshot-signal", "SIGUSR2", "--diagnostic-dir", "/d", "app.js"]
    settings = hs.snapshot_settings(argv, None)
    assert (settings["signal"], settings["diagnostic_dir"]) == ("SIGUSR2", "/d")
    assert settings["signal_source"] == "command line"


def test_command_line_wins_over_node_options():
    """A --diagnostic-dir on the command line overrides the one in NODE_OPTIONS."""
    settings = hs.snapshot_settings(
        ["node", "--diagnostic-dir=/cli", "app.js"], '--heapsnapshot-signal=SIGUSR2 --diagnostic-dir="/env dir"'
    )
    assert settings["diagnostic_dir"] == "/cli" and settings["signal_source"] == "NODE_OPTIONS"


@pytest.mark.parametrize("sig", ["SIGUSR1", "SIGTERM"])
def test_another_snapshot_signal_is_refused(sig):
    """A process that snapshots on another signal is refused: only SIGUSR2 is ever sent."""
    settings = hs.snapshot_settings(["node", f"--heapsnapshot-signal={sig}", "app.js"], None)
    assert f"on {sig}, not SIGUSR2" in (hs.refusal(settings, "pid 7") or "")


def test_environ_parsing_keeps_only_node_options():
    """Only NODE_OPTIONS is taken from /proc/<pid>/environ."""
    raw = b"DB_PASSWORD=secret\0NODE_OPTIONS=--heapsnapshot-signal=SIGUSR2\0PATH=/bin\0"
    assert hs.parse_environ(raw) == "--heapsnapshot-signal=SIGUSR2"


def test_rss_and_completeness_helpers():
    """VmRSS is read in bytes and a snapshot counts as complete only when it ends with `}`."""
    assert hs.parse_rss("Name:\tnode\nVmRSS:\t  114260 kB\n") == 114260 * 1024
    assert hs.looks_complete(b'"strings":["a"]}\n') and not hs.looks_complete(b'"strings":["a",')
