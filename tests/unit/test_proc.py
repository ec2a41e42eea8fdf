"""The process funnel: real short-lived processes, no mocks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from orchestrator import proc
from orchestrator.errors import InfraError


def test_captures_output_and_exit_code() -> None:
    result = proc.run([sys.executable, "-c", "import sys; print('out'); sys.exit(3)"], timeout=30)
    assert result.returncode == 3
    assert result.stdout == "out\n"
    assert not result.ok and not result.timed_out
    with pytest.raises(proc.CommandFailed, match="exit 3"):
        result.check()


def test_argv_is_not_interpreted_by_a_shell() -> None:
    hostile = "$(echo pwned); `id`; 'quote"
    result = proc.run(["printf", "%s", hostile], timeout=30).check()
    assert result.stdout == hostile


def test_log_file_gets_both_streams(tmp_path: Path) -> None:
    log = tmp_path / "cmd.log"
    code = "import sys; print('to-out'); print('to-err', file=sys.stderr)"
    result = proc.run([sys.executable, "-c", code], timeout=30, log=log)
    assert result.ok and result.stdout == ""
    assert set(log.read_text().split()) == {"to-out", "to-err"}


def test_missing_program_is_an_infra_error() -> None:
    with pytest.raises(InfraError, match="command not found"):
        proc.run(["/nonexistent/tool"], timeout=5)


def _descendants_alive(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if marker in " ".join(p.info["cmdline"] or []):
            found.append(p)
    return found


def test_timeout_kills_the_whole_tree() -> None:
    marker = f"orchestrate-test-{os.getpid()}-{time.monotonic_ns()}"
    # A shell that forks a grandchild which ignores SIGTERM.
    script = f"trap '' TERM; sleep 300 & sleep 301; : {marker}"
    result = proc.run(["bash", "-c", script, marker], timeout=1)
    assert result.timed_out and not result.ok
    assert "timed out" in result.describe()
    time.sleep(0.2)
    assert _descendants_alive(marker) == []
    # sleep children do not carry the marker: look for them by parent instead
    assert not [p for p in psutil.Process().children(recursive=True) if p.name() == "sleep"]


def test_interrupt_kills_the_child() -> None:
    """A KeyboardInterrupt (Ctrl-C or SIGTERM in the CLI) must not orphan children."""
    # Set up the handling this tests: a shell that started us with SIGINT ignored
    # (nohup, `&`, some CI runners) would otherwise make the signal a no-op.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            proc.run(["sleep", "30"], timeout=60)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not [p for p in psutil.Process().children(recursive=True) if p.name() == "sleep"]


def test_env_is_added_and_cwd_untouched(tmp_path: Path) -> None:
    before = os.getcwd()
    result = proc.run(
        [sys.executable, "-c", "import os; print(os.environ['ORCH_X'], os.getcwd())"],
        timeout=30,
        env={"ORCH_X": "42"},
        cwd=tmp_path,
    ).check()
    assert result.stdout.split() == ["42", str(tmp_path)]
    assert os.getcwd() == before


def test_background_stop_kills_tree(tmp_path: Path) -> None:
    log = tmp_path / "bg.log"
    with proc.spawn(["bash", "-c", "echo started; sleep 300 & sleep 301"], log=log) as child:
        deadline = time.monotonic() + 10
        while "started" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.poll() is None
        pid = child.pid
    assert child.poll() is not None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not [p for p in psutil.Process().children(recursive=True) if p.name() == "sleep"]


def test_children_die_with_a_killed_orchestrate(tmp_path: Path) -> None:
    """Even SIGKILL, which no handler sees: the child's parent-death signal fires."""
    script = "from orchestrator import proc; proc.run(['sleep', '61.5'], timeout=120)"
    repo = Path(__file__).resolve().parents[2]
    owner = subprocess.Popen([sys.executable, "-c", script], cwd=repo)
    try:
        deadline = time.monotonic() + 20
        sleeper = None
        while sleeper is None and time.monotonic() < deadline:
            kids = psutil.Process(owner.pid).children(recursive=True)
            sleeper = next((k for k in kids if "61.5" in k.cmdline()), None)
            time.sleep(0.05)
        assert sleeper is not None
        owner.kill()
        owner.wait()
        assert psutil.wait_procs([sleeper], timeout=5)[1] == []
    finally:
        owner.kill()


def test_children_are_known_by_the_thread_that_started_them(tmp_path: Path) -> None:
    here = threading.get_ident()
    with proc.spawn(["sleep", "30"], log=tmp_path / "sleep.log") as child:
        assert child.pid in proc.children_of(here)
        other: list[list[int]] = []
        elsewhere = threading.Thread(target=lambda: other.append(proc.children_of(here)))
        elsewhere.start()
        elsewhere.join()
        assert child.pid in other[0]  # asked from another thread, as stop_units does
        assert proc.children_of(elsewhere.ident or 0) == []
        proc.signal_tree(child.pid, signal.SIGTERM)
        assert child.wait(10) == -signal.SIGTERM
    assert child.pid not in proc.children_of(here)  # ended: forgotten
