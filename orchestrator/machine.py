"""This machine as the results record where a unit ran: host, CPU model,
kernel release and QEMU version (results.Placement)."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

from orchestrator import proc
from orchestrator.errors import InfraError


@functools.cache
def identity() -> tuple[str, str, str, str]:
    """This machine: host name, CPU model, kernel release, QEMU version."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        out = proc.run(["qemu-system-x86_64", "--version"], timeout=30)
        qemu = out.stdout.splitlines()[0].strip() if out.ok and out.stdout else "unknown"
    except InfraError:
        qemu = "not installed"
    return platform.node(), cpu or platform.machine(), platform.release(), qemu
