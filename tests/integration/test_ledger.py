"""The ledger for real: a stand-in for orchestrate starts a child that forks a
grandchild in its session, is killed with SIGKILL, and the next holder of the
cache lock kills the grandchild the parent-death signal could not reach."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from orchestrator import ledger
from orchestrator.cache import Cache

# Takes the cache lock as a run does, starts `sh` (which leaves a `sleep` in its
# session) through the funnel, says so, and waits to be killed.
STAND_IN = textwrap.dedent("""\
    import sys, time
    from pathlib import Path
    from orchestrator import proc
    from orchestrator.cache import Cache
    root = Path(sys.argv[1])
    with Cache(root).locked():
        child = proc.spawn(["sh", "-c", "sleep 300 & echo $! > grandchild; wait"],
                           log=root / "sh.log", cwd=root)
        while not (root / "grandchild").exists():
            time.sleep(0.02)
        print(child.pid, flush=True)
        time.sleep(300)
""")


def _session(sid: int) -> list[int]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                out.append(p.pid)
        except OSError:
            pass
    return out


def _dead_run(root: Path) -> tuple[int, int]:
    """(the child's pid = its session id, the grandchild's pid) of a run killed by SIGKILL."""
    stand_in = subprocess.Popen(
        [sys.executable, "-c", STAND_IN, str(root)], stdout=subprocess.PIPE, text=True
    )
    assert stand_in.stdout is not None
    child = int(stand_in.stdout.readline())
    grandchild = int((root / "grandchild").read_text())
    stand_in.send_signal(signal.SIGKILL)
    stand_in.wait()
    return child, grandchild


def test_next_run_reaps_what_a_killed_run_left(tmp_path: Path) -> None:
    child, grandchild = _dead_run(tmp_path)
    deadline = time.monotonic() + 10
    while psutil.pid_exists(child) and time.monotonic() < deadline:
        time.sleep(0.02)  # the parent-death signal takes the direct child ...
    assert not psutil.pid_exists(child)
    assert _session(child) == [grandchild]  # ... but not what it started
    (record,) = (tmp_path / ledger.DIRNAME).glob("*.json")
    assert [c["pid"] for c in json.loads(record.read_text())["children"]] == [child]

    with Cache(tmp_path).locked():
        assert _session(child) == []
    assert list((tmp_path / ledger.DIRNAME).glob("*.json")) == []  # ours removed on the way out


def test_a_live_runs_children_are_left_alone(tmp_path: Path) -> None:
    directory = tmp_path / ledger.DIRNAME
    with ledger.recording(directory):
        sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
        ledger.started(sleeper.pid, "sleep")
        try:
            assert ledger.reap(directory) == []  # the owner (this process) is alive
            assert sleeper.poll() is None
        finally:
            sleeper.kill()
            sleeper.wait()


def test_a_torn_or_reused_record_kills_nothing(tmp_path: Path) -> None:
    directory = tmp_path / ledger.DIRNAME
    directory.mkdir()
    (directory / "1.json").write_text('{"owner": {"pid": 1')  # torn write
    # A dead owner whose child's pid now names another process (this one).
    me = psutil.Process()
    reused = {
        "owner": {"pid": 2**22 + 7, "started": 1.0, "argv0": "orchestrate"},
        "children": [{"pid": me.pid, "started": me.create_time() - 100, "argv0": "make"}],
    }
    (directory / "2.json").write_text(json.dumps(reused))
    assert ledger.reap(directory) == []
    assert list(directory.iterdir()) == []
