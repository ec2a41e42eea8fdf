"""Finding a test's own processes anywhere on the machine: the test puts a marker
in the environment it starts them with, and children inherit it (the sandbox
keeps the environment), whoever their parent is now."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import psutil


def processes_with(name: str, value: str) -> list[psutil.Process]:
    """Processes (not this one) whose environment has name=value."""
    found = []
    for p in psutil.process_iter(["pid", "name"]):
        try:
            if p.pid != os.getpid() and p.environ().get(name) == value:
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def described(procs: list[psutil.Process]) -> list[str]:
    return [f"{p.info['name']}[{p.pid}]" for p in procs]


@contextmanager
def sigint_default() -> Iterator[None]:
    """Children started inside get SIGINT at its default disposition.

    A shell that started the suite with SIGINT ignored (nohup, a backgrounded
    job without job control, some CI runners) would hand that on, and a test
    that sends orchestrate SIGINT would test nothing.  A handler (unlike
    "ignored") is reset to the default by exec.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
