"""Finding a test's own processes anywhere on the machine: the test puts a marker
in the environment it starts them with, and children inherit it (the sandbox
keeps the environment), whoever their parent is now."""

from __future__ import annotations

import os

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
