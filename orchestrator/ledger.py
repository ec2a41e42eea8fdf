"""What a run has started, written down under the cache so the next run can
reap what a dead one left behind.

Every child starts in a session of its own (proc.py) and gets a parent-death
signal, but that signal reaches only the direct child: when orchestrate is
killed with SIGKILL, the compilers a `make -j` started (outside the sandbox),
or anything a test script left running, live on and keep writing into the
cache.  So proc.py notes each child's pid and start time in the active ledger,
one JSON file per run under ``<cache>/procs/``; a run that ends normally
removes its file, and the next run to take the cache lock first kills every
session whose run is gone (:func:`reap`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

DIRNAME = "procs"


@dataclass(frozen=True)
class Entry:
    pid: int
    started: float  # psutil's create_time: with the pid, names one process for good
    argv0: str = ""


def entry_of(pid: int, argv0: str = "") -> Entry | None:
    """The running process pid as an Entry; None when it is gone."""
    try:
        return Entry(pid, psutil.Process(pid).create_time(), argv0)
    except psutil.NoSuchProcess:
        return None


def running(entry: Entry) -> bool:
    """Whether entry's process still runs (and its pid was not reused since)."""
    try:
        return abs(psutil.Process(entry.pid).create_time() - entry.started) < 0.05
    except psutil.NoSuchProcess:
        return False


class Ledger:
    """The children of this process that are still running, kept on disk."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{os.getpid()}.json"
        owner = entry_of(os.getpid(), "orchestrate")
        assert owner is not None
        self._owner = owner
        self._children: dict[int, Entry] = {}
        self._lock = threading.Lock()
        self._write()

    def add(self, pid: int, argv0: str) -> None:
        entry = entry_of(pid, argv0)
        if entry is None:
            return  # already gone: nothing to reap
        with self._lock:
            self._children[pid] = entry
            self._write()

    def discard(self, pid: int) -> None:
        with self._lock:
            if self._children.pop(pid, None) is not None:
                self._write()

    def close(self) -> None:
        self.path.unlink(missing_ok=True)

    def _write(self) -> None:
        data = {
            "owner": asdict(self._owner),
            "children": [asdict(e) for e in self._children.values()],
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)


_active: Ledger | None = None


@contextlib.contextmanager
def recording(directory: Path) -> Iterator[Ledger]:
    """Note every child proc.py starts, until the block ends."""
    global _active
    ledger = Ledger(directory)
    _active = ledger
    try:
        yield ledger
    finally:
        _active = None
        ledger.close()


def started(pid: int, argv0: str) -> None:
    if _active is not None:
        _active.add(pid, argv0)


def ended(pid: int) -> None:
    if _active is not None:
        _active.discard(pid)


def reap(directory: Path) -> list[str]:
    """Kill what the dead runs noted in ``directory`` left running; describe each kill.

    A ledger whose owner is alive belongs to a running orchestrate (waiting for
    the lock, or using another cache's lock): it is left alone.
    """
    killed: list[str] = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            data = json.loads(path.read_text())
            owner = Entry(**data["owner"])
            children = [Entry(**c) for c in data["children"]]
        except (OSError, ValueError, TypeError, KeyError):
            path.unlink(missing_ok=True)  # a torn write of a dead run: nothing to go on
            continue
        if running(owner):
            continue
        for child in children:
            killed += _kill_session(child)
        path.unlink(missing_ok=True)
    return killed


def _kill_session(leader: Entry) -> list[str]:
    """SIGKILL every process of the session ``leader`` started.

    A pid in use as a session id is not reused, so the session's members are
    the leader's own descendants, unless the leader's pid now names another
    process (its session ended and the pid was taken): then there is nothing.
    """
    if psutil.pid_exists(leader.pid) and not running(leader):
        return []
    members = []
    for p in psutil.process_iter(["pid", "name"]):
        with contextlib.suppress(OSError):
            if os.getsid(p.pid) == leader.pid and p.pid != os.getpid():
                members.append(p)
    for p in members:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    psutil.wait_procs(members, timeout=5)
    return [f"{p.info['name']} (pid {p.pid}, left by {leader.argv0} {leader.pid})" for p in members]
