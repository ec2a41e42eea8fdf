"""The guest programs: built once per content of their directory.

`make -C <dir> OUT=<out>` builds them; everything in <out> goes under
/opt/selftests in the guest's test layer.  The result is cached by a hash of
the directory's files, so an unchanged directory is not rebuilt and a changed
test does not touch the base image.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from orchestrator import proc
from orchestrator.cache import digest

GUEST_DIR = "/opt/selftests"


@dataclass(frozen=True)
class Built:
    out: Path | None
    error: str | None  # the make failure, if any
    log: Path

    def files(self) -> tuple[tuple[str, Path], ...]:
        """(guest path, host path) for every built file."""
        if self.out is None:
            return ()
        return tuple(
            (f"{GUEST_DIR}/{p.relative_to(self.out)}", p)
            for p in sorted(self.out.rglob("*"))
            if p.is_file()
        )


def source_hash(directory: Path) -> str:
    parts: list[str | bytes] = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if path.is_file() and rel.parts[0] != "out":
            parts += [str(rel), str(path.stat().st_mode & 0o111), path.read_bytes()]
    return digest(*parts)


def build(directory: Path, cache: Path, log: Path, timeout: float = 900) -> Built:
    out = cache / "selftests" / source_hash(directory)[:16]
    if (out / ".done").exists():
        return Built(out / "files", None, log)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    result = proc.run(
        ["make", "-C", directory, f"OUT={partial / 'files'}"], timeout=timeout, log=log
    )
    if not result.ok:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        return Built(None, "\n".join([result.describe(), *tail]), log)
    (partial / ".done").touch()
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return Built(out / "files", None, log)
