"""The kconfig stage: base config + fragments -> a verified final .config.

`make <base>` (e.g. tinyconfig) writes a starting .config, the matrix's
fragments are merged on top of it and `make olddefconfig` resolves the
result.  Kconfig silently drops values whose dependencies are not met, so
every requested value is compared with the final .config and each one that
did not stick is reported with where the symbol is defined and what it
depends on (kconfig_deps.py).  A failing make is a verdict for the variant,
not an exception.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator import proc
from orchestrator.errors import UserError
from orchestrator.kernel.kconfig_deps import dependency_reason
from orchestrator.results import KconfigMismatch
from orchestrator.sandbox import Sandbox

_SET = re.compile(r"(CONFIG_[A-Za-z0-9_]+)=(.*)")
_UNSET = re.compile(r"# (CONFIG_[A-Za-z0-9_]+) is not set")

# Lines of the log shown as the error of a failed make.
ERROR_TAIL_LINES = 20


# --- .config text <-> values ------------------------------------------------


def parse(text: str, *, source: str = "<config>") -> dict[str, str]:
    """Map each symbol of a .config or fragment to its value as written.

    `# CONFIG_X is not set` becomes "n"; strings keep their quotes.  Any other
    non-comment line is an error: a silently ignored typo in a fragment would
    make the variant test something else than the user asked for.
    """
    values: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if match := _SET.fullmatch(line):
            values[match[1]] = match[2]
        elif match := _UNSET.fullmatch(line):
            values[match[1]] = "n"
        elif line and not line.startswith("#"):
            raise UserError(f"{source}:{lineno}: not a kconfig line: {raw!r}")
    return values


def render(values: Mapping[str, str]) -> str:
    """Write values back in .config syntax, in the mapping's order."""
    lines = [
        f"# {sym} is not set" if value == "n" else f"{sym}={value}" for sym, value in values.items()
    ]
    return "".join(line + "\n" for line in lines)


def merge(
    base: Mapping[str, str], fragments: Sequence[tuple[str, Mapping[str, str]]]
) -> tuple[dict[str, str], tuple[str, ...]]:
    """Apply fragments in order on top of base; later fragments win.

    Like scripts/kconfig/merge_config.sh, a symbol set by a fragment moves to
    the end: kconfig keeps the *last* `=y` of a choice, so a fragment's choice
    value must come after the base's.  Notes list overrides between
    fragments (overriding the base is the point of a fragment, not news).
    """
    merged = dict(base)
    origin: dict[str, str] = {}
    notes: list[str] = []
    for label, values in fragments:
        for sym, value in values.items():
            previous = origin.get(sym)
            if previous is not None and merged[sym] != value:
                notes.append(f"{label} overrides {sym}={merged[sym]} from {previous} with {value}")
            merged.pop(sym, None)
            merged[sym] = value
            origin[sym] = label
    return merged, tuple(notes)


def verify(
    requested: Sequence[tuple[str, Mapping[str, str]]],
    final: Mapping[str, str],
    reasons: Callable[[str], str],
) -> tuple[KconfigMismatch, ...]:
    """Report every requested value that differs in the final .config.

    The last fragment that sets a symbol is the one compared (and blamed).
    A symbol absent from the final .config counts as "n".
    """
    wanted: dict[str, tuple[str, str]] = {}
    for label, values in requested:
        for sym, value in values.items():
            wanted[sym] = (value, label)
    return tuple(
        KconfigMismatch(
            symbol=sym,
            wanted=value,
            got=final.get(sym, "n"),
            fragment=label,
            reason=reasons(sym),
        )
        for sym, (value, label) in wanted.items()
        if final.get(sym, "n") != value
    )


def config_hash(text: str) -> str:
    """sha256 of the symbol values only, so headers and comments do not count."""
    values = parse(text)
    return hashlib.sha256(render(dict(sorted(values.items()))).encode()).hexdigest()


# --- the stage --------------------------------------------------------------


@dataclass(frozen=True)
class Configured:
    config_text: str  # the final .config ("" when make failed)
    sha256: str  # config_hash of config_text ("" when make failed)
    mismatches: tuple[KconfigMismatch, ...]
    notes: tuple[str, ...]
    log: Path
    error: str | None = None  # tail of the log of the make that failed

    @property
    def ok(self) -> bool:
        return self.error is None and not self.mismatches


def configure(
    srctree: Path,
    builddir: Path,
    *,
    arch: str,
    base: str,
    fragments: Sequence[Path],
    make_args: Sequence[str],
    log: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
    sandbox: Sandbox,
) -> Configured:
    """make <base>, merge the fragments, make olddefconfig, verify (the makes
    run the tree's own Makefiles and Kconfig: in the sandbox, writing builddir)."""
    srctree, builddir = srctree.resolve(), builddir.resolve()
    requested = [(str(path), _read_fragment(path)) for path in fragments]
    builddir.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    make = ["make", "-C", str(srctree), f"O={builddir}", f"ARCH={arch}", *make_args]
    dotconfig = builddir / ".config"

    def run(target: str) -> str | None:
        return _make([*make, target], log, timeout, env, sandbox, srctree, builddir)

    error = run(base)
    if error is not None:
        return Configured("", "", (), (), log, error)
    merged, notes = merge(parse(dotconfig.read_text(), source=str(dotconfig)), requested)
    dotconfig.write_text(render(merged))
    error = run("olddefconfig")
    if error is not None:
        return Configured("", "", (), notes, log, error)

    text = dotconfig.read_text()
    final = parse(text, source=str(dotconfig))
    srcarch = _srcarch(arch)
    mismatches = verify(
        requested, final, lambda sym: dependency_reason(srctree, sym, final=final, srcarch=srcarch)
    )
    return Configured(text, config_hash(text), mismatches, notes, log)


def _read_fragment(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"{path}: cannot read kconfig fragment: {exc.strerror}") from exc
    return parse(text, source=str(path))


def _make(
    argv: list[str],
    log: Path,
    timeout: float,
    env: Mapping[str, str] | None,
    sandbox: Sandbox,
    srctree: Path,
    builddir: Path,
) -> str | None:
    """Run one make into the log; None on success, else the failure's log tail."""
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        start = out.tell()
    wrap = sandbox.prefix(writable=[builddir], readable=[srctree])
    result = proc.run(argv, timeout=timeout, log=log, env=env, wrap=wrap)
    if result.ok:
        return None
    with log.open("rb") as out:
        out.seek(start)
        tail = out.read().decode(errors="replace").splitlines()[-ERROR_TAIL_LINES:]
    return "\n".join([result.describe(), *tail])


def _srcarch(arch: str) -> str:
    """The arch/ directory for an ARCH= value (as the kernel Makefile maps it)."""
    return "x86" if arch in ("x86_64", "i386", "x86") else arch
