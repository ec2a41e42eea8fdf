"""Why a requested kconfig value did not stick: where the symbol is defined, what it needs.

Reads the tree's Kconfig files (git grep, else a walk) for the symbol's
definitions outside other architectures, the if/menu/choice blocks around
each and the entry's own `depends on` and prompt, and, given the final
.config, evaluates those dependencies to name the ones that are not met.
kconfig.py's verify() puts the answer in each mismatch's reason.
"""

from __future__ import annotations

import enum
import operator
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.git import git

# --- why did a value not stick? ----------------------------------------------

_ENTRY_END = {
    "config", "menuconfig", "choice", "endchoice", "menu", "endmenu",
    "if", "endif", "source", "comment", "mainmenu",
}  # fmt: skip
_TRAILING_COMMENT = re.compile(r"\s+#[^\"']*$")  # as in "endif # NET"
_SYMBOL = re.compile(r"[A-Za-z0-9_]+")
_PROMPT = re.compile(
    r"(?:bool|tristate|string|int|hex|prompt)\s+(?:\"[^\"]*\"|'[^']*')(?:\s+if\s+(?P<cond>.+))?"
)


class _Block(enum.Enum):
    """The Kconfig blocks that enclose entries (each ends with its end<word>)."""

    IF = "if"
    MENU = "menu"
    CHOICE = "choice"


@dataclass
class _Frame:
    """An enclosing if/menu/choice block and the conditions it adds."""

    kind: _Block
    line: int
    deps: list[str] = field(default_factory=list)
    prompt: str = ""


@dataclass
class _Entry:
    deps: list[str] = field(default_factory=list)
    has_prompt: bool = False
    prompt_if: str | None = None


def dependency_reason(
    srctree: Path,
    symbol: str,
    *,
    final: Mapping[str, str] | None = None,
    srcarch: str = "x86",
) -> str:
    """Say where a symbol is defined and what it depends on.

    With the final .config values, also name the unmet dependencies and the
    selected option of a choice.  Definitions under other architectures'
    arch/ directories are ignored.
    """
    name = symbol.removeprefix("CONFIG_")
    if not _SYMBOL.fullmatch(name):
        return "not a valid symbol name"
    locations = _find_definitions(srctree, name, srcarch)
    if not locations:
        return "no such symbol in this tree"
    parts = [_describe(srctree, path, line, name, final) for path, line in locations]
    found = [part for part in parts if part is not None]
    return "; also ".join(found) if found else "no such symbol in this tree"


def _definition_re(name: str) -> re.Pattern[str]:
    return re.compile(rf"\s*(?:menu)?config\s+{re.escape(name)}\s*")


def _find_definitions(srctree: Path, name: str, srcarch: str) -> list[tuple[str, int]]:
    """(path relative to srctree, 1-based line) of each `config NAME`."""
    pattern = rf"^[[:space:]]*(menu)?config[[:space:]]+{name}[[:space:]]*$"
    result = git(srctree, "grep", "-n", "-E", pattern, "--", "*Kconfig*", check=False)
    found: list[tuple[str, int]] = []
    if result.returncode == 0:
        for hit in result.stdout.splitlines():
            path, line, _ = hit.split(":", 2)
            found.append((path, int(line)))
    else:
        # Not a git work tree (or nothing tracked matched): read the files.
        found = _walk_definitions(srctree, _definition_re(name))
    return sorted(loc for loc in found if _relevant(loc[0], srcarch))


def _walk_definitions(srctree: Path, regex: re.Pattern[str]) -> list[tuple[str, int]]:
    found = []
    for root, dirs, files in os.walk(srctree):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in files:
            if "Kconfig" not in name:
                continue
            path = Path(root, name)
            lines = path.read_text(errors="replace").splitlines()
            rel = path.relative_to(srctree).as_posix()
            found += [(rel, no) for no, line in enumerate(lines, 1) if regex.fullmatch(line)]
    return found


def _relevant(path: str, srcarch: str) -> bool:
    parts = path.split("/")
    if parts[0] == "arch" and len(parts) > 2 and parts[1] != srcarch:
        return False  # another architecture's definition
    if parts[0] == "arch" and "um" in parts[2:-1] and srcarch != "um":
        return False  # arch/x86/um: the x86 flavour of user-mode Linux
    return not (parts[0] == "tools" or path.startswith("scripts/kconfig/tests/"))


def _describe(
    srctree: Path, path: str, line: int, name: str, final: Mapping[str, str] | None
) -> str | None:
    """Describe the definition at path:line; None if that line is help text."""
    lines = (srctree / path).read_text(errors="replace").splitlines()
    if all(no != line for no, _ in _logical_lines(lines)):
        return None
    frames = _enclosing(lines, line)
    entry = _entry(lines, line)
    # Enclosing blocks' conditions first (outermost first), then the entry's own.
    exprs = [*(dep for frame in frames for dep in frame.deps), *entry.deps]
    deps = list(dict.fromkeys(term for expr in exprs for term in _conjuncts(expr)))
    text = f"defined in {path}:{line}"
    if deps:
        text += "; depends on " + " && ".join(_paren(d) for d in deps)
        not_met = unmet(deps, final)
        if not_met:
            text += "; not met: " + ", ".join(not_met)
    if not entry.has_prompt:
        text += "; no prompt (it is only set by a default or a select)"
    elif entry.prompt_if:
        text += f"; settable only if {entry.prompt_if}"
        if unmet([entry.prompt_if], final):
            text += " (not met)"
    choice = next((f for f in reversed(frames) if f.kind is _Block.CHOICE), None)
    if choice is not None:
        text += "; " + _choice_note(lines, choice, name, final)
    return text


def _choice_note(
    lines: list[str], choice: _Frame, name: str, final: Mapping[str, str] | None
) -> str:
    label = f"in choice {choice.prompt}" if choice.prompt else "in a choice"
    if final is None:
        return f"{label} (another option may be selected)"
    members = _choice_members(lines, choice.line)
    chosen = [m for m in members if m != name and final.get(f"CONFIG_{m}") == "y"]
    if chosen:
        return f"{label} (CONFIG_{chosen[0]} is selected)"
    return label


def _logical_lines(lines: list[str]) -> Iterator[tuple[int, str]]:
    """(1-based number, stripped text) of the Kconfig statements in lines.

    Comments, blank lines and help text are skipped (help text is free prose
    that may start with "if" or "config"); backslash continuations are joined.
    """
    help_indent: int | None = None  # indentation of the help keyword...
    body_indent: int | None = None  # ...and of the first line of its text
    pending, start = "", 0
    for no, raw in enumerate(lines, 1):
        indent = len(raw.expandtabs()) - len(raw.expandtabs().lstrip())
        text = raw.strip()
        if help_indent is not None:
            if not text:
                continue
            if body_indent is None and indent > help_indent:
                body_indent = indent
            if body_indent is not None and indent >= body_indent:
                continue
            help_indent = body_indent = None
        if not pending and (not text or text.startswith("#")):
            continue
        if not pending:
            start = no
        if text.endswith("\\"):
            pending += text[:-1].rstrip() + " "
            continue
        text, pending = _TRAILING_COMMENT.sub("", pending + text), ""
        if text in ("help", "---help---"):
            help_indent = indent
            continue
        yield start, text


def _enclosing(lines: list[str], upto: int) -> list[_Frame]:
    """The if/menu/choice blocks open at line `upto`, outermost first."""
    stack: list[_Frame] = []
    attach: _Frame | None = None  # the block whose own attributes follow
    for no, text in _logical_lines(lines):
        if no >= upto:
            break
        word, rest = _split(text)
        if word == "if":
            stack.append(_Frame(_Block.IF, no, [rest]))
            attach = None
        elif word in ("menu", "choice"):
            attach = _Frame(_Block(word), no)
            stack.append(attach)
        elif word in ("endif", "endmenu", "endchoice"):
            _pop(stack, _Block(word.removeprefix("end")))
            attach = None
        elif word == "depends" and attach is not None:
            attach.deps.append(rest.removeprefix("on").strip())
        elif word == "prompt" and attach is not None:
            attach.prompt = rest
        elif word in _ENTRY_END:
            attach = None
    return stack


def _split(text: str) -> tuple[str, str]:
    """A statement's keyword and the rest of it."""
    word, _, rest = text.replace("\t", " ").partition(" ")
    return word, rest.strip()


def _pop(stack: list[_Frame], kind: _Block) -> None:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i].kind is kind:
            del stack[i:]
            return


def _entry(lines: list[str], line: int) -> _Entry:
    """The dependencies and prompt of the config entry starting at line."""
    entry = _Entry()
    for no, text in _logical_lines(lines):
        if no <= line:
            continue
        word, rest = _split(text)
        if word in _ENTRY_END:
            break
        if word == "depends":
            entry.deps.append(rest.removeprefix("on").strip())
        elif match := _PROMPT.fullmatch(text):
            entry.has_prompt = True
            entry.prompt_if = match["cond"]
    return entry


def _choice_members(lines: list[str], line: int) -> list[str]:
    members = []
    for no, text in _logical_lines(lines):
        if no <= line:
            continue
        word, rest = _split(text)
        if word == "endchoice":
            break
        if word in ("config", "menuconfig"):
            members.append(rest)
    return members


def _paren(expr: str) -> str:
    return f"({expr})" if "||" in expr and not _wrapped(expr) else expr


def _wrapped(expr: str) -> bool:
    """True if expr is one parenthesised group, like "(A || B)"."""
    if not (expr.startswith("(") and expr.endswith(")")):
        return False
    depth = 0
    for i, char in enumerate(expr):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and i < len(expr) - 1:
            return False
    return True


# --- evaluating dependency expressions against the final .config -----------

_TOKEN = re.compile(r"\s*(&&|\|\||!=|<=|>=|[()!=<>]|\"[^\"]*\"|'[^']*'|[A-Za-z0-9_]+)")


def unmet(deps: Sequence[str], final: Mapping[str, str] | None) -> list[str]:
    """The top-level conjuncts of deps that are false in final.

    A conjunct that cannot be evaluated (say, a $(...) macro) is not
    reported: better no hint than a wrong one.
    """
    if final is None:
        return []
    found = []
    for term in (t for dep in deps for t in _conjuncts(dep)):
        try:
            if _Expr(term, final).evaluate() == 0:
                found.append(term)
        except ValueError:
            pass
    return found


def _conjuncts(expr: str) -> list[str]:
    """Split expr on its top-level &&, dropping redundant outer parentheses."""
    while _wrapped(expr):
        expr = expr[1:-1].strip()
    terms, depth, start = [], 0, 0
    for i, char in enumerate(expr):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and expr.startswith("&&", i):
            terms.append(expr[start:i].strip())
            start = i + 2
    terms.append(expr[start:].strip())
    return [t for t in terms if t]


class _Expr:
    """A recursive-descent evaluator of Kconfig expressions (n=0, m=1, y=2)."""

    def __init__(self, text: str, final: Mapping[str, str]) -> None:
        self.tokens = self._tokenize(text)
        self.pos = 0
        self.final = final

    @staticmethod
    def _tokenize(text: str) -> list[str]:
        if "$(" in text:
            raise ValueError("macros are expanded by kconfig, not here")
        tokens, pos = [], 0
        while pos < len(text.rstrip()):
            match = _TOKEN.match(text, pos)
            if match is None:
                raise ValueError(f"cannot evaluate {text!r}")
            tokens.append(match[1])
            pos = match.end()
        return tokens

    def evaluate(self) -> int:
        value = self._or()
        if self.pos != len(self.tokens):
            raise ValueError("trailing tokens")
        return value

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _next(self) -> str:
        token = self._peek()
        if token is None:
            raise ValueError("unexpected end of expression")
        self.pos += 1
        return token

    def _or(self) -> int:
        value = self._and()
        while self._peek() == "||":
            self._next()
            value = max(value, self._and())
        return value

    def _and(self) -> int:
        value = self._not()
        while self._peek() == "&&":
            self._next()
            value = min(value, self._not())
        return value

    def _not(self) -> int:
        if self._peek() == "!":
            self._next()
            return 2 - self._not()
        if self._peek() == "(":
            self._next()
            value = self._or()
            if self._next() != ")":
                raise ValueError("unbalanced parentheses")
            return value
        left = self._value(self._next())
        if self._peek() in ("=", "!=", "<", "<=", ">", ">="):
            return 2 if _compare(left, self._next(), self._value(self._next())) else 0
        return {"y": 2, "m": 1}.get(left, 0)

    def _value(self, token: str) -> str:
        if token[0] in "\"'":
            return token[1:-1]
        if not _SYMBOL.fullmatch(token):
            raise ValueError(f"unexpected {token!r}")
        value = self.final.get(f"CONFIG_{token}")
        if value is not None:
            return value.strip('"')
        if token in ("y", "m", "n") or re.fullmatch(r"-?(0x)?[0-9a-fA-F]+", token):
            return token  # a constant
        return "n"  # an unset (or unknown) symbol


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _compare(left: str, op: str, right: str) -> bool:
    """Compare as numbers when both sides are numbers, else as strings."""
    try:
        return _COMPARE[op](int(left, 0), int(right, 0))
    except ValueError:
        return _COMPARE[op](left, right)
