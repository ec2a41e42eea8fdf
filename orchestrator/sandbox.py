"""Code from the tree under test runs in a sandbox (Debian's bubblewrap).

A series from a mailing list can put anything in a Makefile or Kconfig
(`$(shell …)`), and configuring or building the kernel, building its
selftests or inspecting what they built runs it.  Wrapped by `Sandbox.prefix`,
such a command sees the host read-only, has no network (a network
namespace of its own), and cannot see the home directory, the cache's own
records, the run's keys or the reports (each hidden under an empty tmpfs);
it may write only the directories its step must write (the build directory,
ccache) and read again the few hidden ones it needs (the tree's git
objects, the kernel it builds against).  Its processes die with
orchestrate.  Paths inside are the host's paths, so builds stay
incremental and ccache hits across sandboxed and plain builds.

`Sandbox(enabled=False)` (`--no-sandbox`) runs the same commands plainly.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import InfraError


@dataclass(frozen=True)
class Sandbox:
    enabled: bool = True
    hidden: tuple[Path, ...] = ()  # invisible inside: an empty tmpfs over each
    readable: tuple[Path, ...] = ()  # visible again (read-only) inside a hidden one
    writable: tuple[Path, ...] = ()  # writable by every wrapped command (ccache)

    def prefix(
        self, *, writable: Sequence[Path] = (), readable: Sequence[Path] = ()
    ) -> tuple[str, ...]:
        """What runs a command in the sandbox (proc.run's `wrap`), writing only
        `writable` and the common writable directories; () when it is off."""
        if not self.enabled:
            return ()
        if shutil.which("bwrap") is None:
            raise InfraError(
                "bwrap (Debian's bubblewrap) is not installed: scripts/install-system-deps "
                "installs it; --no-sandbox runs code from the tree under test unconfined"
            )
        args = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        args += ["--tmpfs", "/tmp"]
        for path in self.hidden:
            if path.exists():
                args += ["--tmpfs", str(path)]
        for path in (*self.readable, *readable):
            if path.exists():
                args += ["--ro-bind", str(path), str(path)]
        for path in (*self.writable, *writable):
            path.mkdir(parents=True, exist_ok=True)
            args += ["--bind", str(path), str(path)]
        args += ["--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-pid"]
        args += ["--die-with-parent", "--new-session"]
        if os.geteuid() == 0:
            args += ["--cap-drop", "ALL"]  # root inside keeps no capability
        return (*args, "--")


PLAIN = Sandbox(enabled=False)  # for callers that run nothing from a tree under test


def for_run(
    *,
    cache: Path,
    run_dir: Path,
    reports: Path,
    enabled: bool = True,
) -> Sandbox:
    """The sandbox of one run: home, cache, reports and run directory hidden;
    the cache's trees readable again (git objects, for the kernel's version
    string); ccache writable."""
    home = Path(os.environ.get("HOME", "/root"))
    hidden = [p for p in (home, cache, reports, run_dir) if p.is_absolute()]
    trees = cache / "trees"
    readable = [trees, *_alternates(trees)]
    return Sandbox(
        enabled=enabled,
        hidden=tuple(dict.fromkeys(hidden)),
        readable=tuple(readable),
        writable=(cache / "ccache",),
    )


def _alternates(trees: Path) -> list[Path]:
    """Object stores the cached trees borrow from (a local tree, read-only)."""
    found: list[Path] = []
    for info in trees.glob("*/objects/info/alternates"):
        try:
            found += [Path(line) for line in info.read_text().split() if line.startswith("/")]
        except OSError:
            continue
    return found
