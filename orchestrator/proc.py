"""The only place that starts processes.

Every external command (git, make, qemu, ssh-keygen, ...) goes through
:func:`run` with an argv list, a timeout and optionally a log file.  Children
start in their own session so that a timeout, Ctrl-C or SIGTERM can kill the
whole process tree, not just the direct child.  Each child also gets a
parent-death signal (util-linux's setpriv --pdeathsig), so that even a
`kill -9` of orchestrate takes its direct children (make, QEMU) with it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from orchestrator import ledger
from orchestrator.errors import InfraError

StrPath = str | os.PathLike[str]

# The children each thread started and has not yet seen end: a unit runs in one
# thread, so stopping a unit from outside (a Dask worker's stop_units) signals
# exactly its process trees.  Noted as the ledger notes them (pid and start
# time), so a pid the kernel has given to another process since is not taken.
_by_thread: dict[int, dict[int, ledger.Entry]] = {}
_by_thread_lock = threading.Lock()


def _started(pid: int, argv0: str) -> None:
    ledger.started(pid, argv0)
    entry = ledger.entry_of(pid, argv0)
    if entry is not None:
        with _by_thread_lock:
            _by_thread.setdefault(threading.get_ident(), {})[pid] = entry


def _ended(pid: int) -> None:
    ledger.ended(pid)
    with _by_thread_lock:
        for thread, pids in list(_by_thread.items()):
            pids.pop(pid, None)
            if not pids:
                del _by_thread[thread]


def children_of(thread: int) -> list[int]:
    """The children a thread (its ident) started through this module that still run."""
    with _by_thread_lock:
        noted = list(_by_thread.get(thread, {}).values())
    return sorted(e.pid for e in noted if ledger.running(e))


def signal_tree(pid: int, sig: signal.Signals) -> None:
    """Send sig to pid and every descendant, without waiting (the owner reaps them).

    The tree is suspended while it is listed, so it cannot fork past it;
    then resumed, since a stopped process would not act on SIGTERM.
    """
    with contextlib.suppress(psutil.Error):
        child = psutil.Process(pid)
        child.suspend()
        tree = [*child.children(recursive=True), child]
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.send_signal(sig)
        child.resume()


@dataclass(frozen=True)
class CmdResult:
    argv: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False
    log: Path | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def describe(self) -> str:
        cmd = " ".join(self.argv)
        if self.timed_out:
            return f"{cmd}: timed out after {self.duration:.0f}s"
        return f"{cmd}: exit {self.returncode}"

    def check(self) -> CmdResult:
        """Return self if the command succeeded, else raise CommandFailed."""
        if not self.ok:
            raise CommandFailed(self)
        return self


class CommandFailed(InfraError):
    def __init__(self, result: CmdResult) -> None:
        self.result = result
        detail = (result.stderr or result.stdout).strip()[-2000:]
        super().__init__(f"{result.describe()}\n{detail}" if detail else result.describe())


# Prefixed to every child's argv: SIGKILL the child when the thread that
# started it dies (PR_SET_PDEATHSIG survives the exec).
_DIE_WITH_PARENT = ("setpriv", "--pdeathsig", "KILL", "--")


def _launchable(
    args: tuple[str, ...],
    env: Mapping[str, str] | None,
    cwd: StrPath | None,
    wrap: Sequence[str] = (),
) -> tuple[str, ...]:
    """args behind the parent-death wrapper (and `wrap`, a sandbox), or InfraError
    when args[0] cannot run (the wrappers would start and then fail with their own
    message)."""
    program = args[0]
    if os.sep in program:
        found = os.access(Path(cwd or ".") / program, os.X_OK)
    else:
        found = shutil.which(program, path=(env or os.environ).get("PATH", os.defpath)) is not None
    if not found:
        raise InfraError(f"{program}: command not found (is it installed?)")
    return (*_DIE_WITH_PARENT, *wrap, *args)


def run(
    argv: Sequence[StrPath],
    *,
    timeout: float,
    cwd: StrPath | None = None,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    stdin: str | None = None,
    wrap: Sequence[str] = (),
) -> CmdResult:
    """Run argv to completion or until timeout, then kill its process tree.

    ``wrap`` runs it inside another command (a sandbox's prefix); the
    result still names argv.

    With ``log`` the combined stdout+stderr streams to that file (for long,
    chatty commands such as make) and the result's stdout/stderr are empty.
    ``env`` entries are added to the current environment.
    """
    args = tuple(str(a) for a in argv)
    full_env = {**os.environ, **env} if env is not None else None
    start = time.monotonic()
    log_file = open(log, "ab") if log is not None else None  # noqa: SIM115
    try:
        try:
            child = subprocess.Popen(
                _launchable(args, full_env, cwd, wrap),
                cwd=cwd,
                env=full_env,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=log_file if log_file else subprocess.PIPE,
                stderr=subprocess.STDOUT if log_file else subprocess.PIPE,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise InfraError(f"{args[0]}: command not found (is it installed?)") from exc
        _started(child.pid, args[0])
        try:
            out, err = child.communicate(
                stdin.encode() if stdin is not None else None, timeout=timeout
            )
            timed_out = False
        except subprocess.TimeoutExpired:
            kill_tree(child.pid)
            out, err = child.communicate()
            timed_out = True
        except BaseException:
            # Ctrl-C, SIGTERM (raised as an exception by the CLI) or a bug:
            # never leave the child behind.
            kill_tree(child.pid)
            child.wait()
            raise
        finally:
            _ended(child.pid)
    finally:
        if log_file:
            log_file.close()
    return CmdResult(
        argv=args,
        returncode=child.returncode,
        stdout=(out or b"").decode(errors="replace"),
        stderr=(err or b"").decode(errors="replace"),
        duration=time.monotonic() - start,
        timed_out=timed_out,
        log=log,
    )


def kill_tree(pid: int, grace: float = 3.0) -> None:
    """Terminate pid and all its descendants; SIGKILL what survives the grace.

    The parent is stopped first so that it cannot fork new children while
    we collect the tree.
    """
    try:
        parent = psutil.Process(pid)
        parent.send_signal(signal.SIGSTOP)
        procs = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
            proc.send_signal(signal.SIGCONT)
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace)


class Background:
    """A long-running child (QEMU): started now, stopped by the owner.

    Use it as a context manager so the process tree is killed on every exit
    path, including Ctrl-C and SIGTERM (which the CLI turns into
    KeyboardInterrupt).
    """

    def __init__(self, popen: subprocess.Popen[bytes], argv: tuple[str, ...], log: Path) -> None:
        self._popen = popen
        self.argv = argv
        self.log = log
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self._popen.pid

    def poll(self) -> int | None:
        """The exit code if the process has ended, else None."""
        return self._popen.poll()

    def wait(self, timeout: float) -> int | None:
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 3.0) -> None:
        if self._popen.poll() is None:
            kill_tree(self._popen.pid, grace)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(grace)
        _ended(self._popen.pid)

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spawn(
    argv: Sequence[StrPath],
    *,
    log: Path,
    cwd: StrPath | None = None,
    env: Mapping[str, str] | None = None,
) -> Background:
    """Start argv in the background, stdout+stderr to log, stdin closed."""
    args = tuple(str(a) for a in argv)
    full_env = {**os.environ, **env} if env is not None else None
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        try:
            popen = subprocess.Popen(
                _launchable(args, full_env, cwd),
                cwd=cwd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise InfraError(f"{args[0]}: command not found (is it installed?)") from exc
    _started(popen.pid, args[0])
    return Background(popen, args, log)
