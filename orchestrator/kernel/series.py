"""Patch series: read them from files, apply them (and reverts) onto a base.

:func:`collect` turns the user's patch files, directories and mboxes into
:class:`Patch` records; :func:`apply` builds a branch from a base commit, the
reverts and the patches, one commit each.  A patch that does not apply is a
result (CONFLICT), never an exception: only a broken tool or repository raises.

Commits are reproducible: the committer date (and, for reverts, the author
date) is fixed, so the same series on the same base always gives the same head
sha, which is what lets builds be cached by commit.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import InfraError, UserError
from orchestrator.git import git
from orchestrator.matrix import Revert
from orchestrator.proc import CmdResult
from orchestrator.results import PatchOutcome, PatchResult

SUFFIXES = (".patch", ".diff", ".mbox", ".eml")
OUTPUT_LIMIT = 4000

# Fixed dates make commits reproducible (git's raw "<epoch> <tz>" format).
FIXED_DATE = "@946684800 +0000"  # 2000-01-01T00:00:00Z
FIXED_DATE_RFC2822 = "Sat, 1 Jan 2000 00:00:00 +0000"
# Repository config could run hooks, sign commits or replay recorded
# resolutions; none of that may change what a series produces.
_CONFIG = {
    "core.hooksPath": "/dev/null",
    "commit.gpgSign": "false",
    "rerere.enabled": "false",
}
_ENV = {
    "GIT_COMMITTER_DATE": FIXED_DATE,
    "GIT_CONFIG_COUNT": str(len(_CONFIG)),
    **{f"GIT_CONFIG_KEY_{i}": k for i, k in enumerate(_CONFIG)},
    **{f"GIT_CONFIG_VALUE_{i}": v for i, v in enumerate(_CONFIG.values())},
}
_REVERT_ENV = {**_ENV, "GIT_AUTHOR_DATE": FIXED_DATE}

# An mbox "From " separator line: "From <anything> Www Mmm dd hh:mm[:ss] ...".
# Requiring the date keeps a commit message line such as "From the docs..."
# from splitting a message.
_POSTMARK = re.compile(
    r"^From \S+ +[A-Z][a-z]{2} +[A-Z][a-z]{2} +\d{1,2} +\d{1,2}:\d\d(?::\d\d)?\b.*$",
    re.MULTILINE,
)
_MBOXRD_ESCAPE = re.compile(r"^>(>*From )", re.MULTILINE)
_DIFF = re.compile(r"^(?:diff --git |--- \S.*\r?\n\+\+\+ \S|GIT binary patch)", re.MULTILINE)
_HEADER_LINE = re.compile(r"^[A-Za-z0-9-]+:")
_SUBJECT_PREFIX = re.compile(r"^\s*(?:\[[^\]]*\]|re:|fwd?:)\s*", re.IGNORECASE)
_COVER_TAG = re.compile(r"\b0+/\d+\s*$")
_PATCH_FILES = re.compile(r"^(?:\+\+\+|---) (?:[ab]/)?(\S+)", re.MULTILINE)
# How `git apply --check` names each file it cannot patch.
_FAILED_FILE = re.compile(
    r"^error: (?:patch failed: (\S+):\d+|(\S+): (?:patch does not apply"
    r"|No such file or directory|already exists in [a-z ]+|does not exist in index))$"
)
# git's advice on resuming an am or a revert: nobody will resume it.
_RESUME_ADVICE = (
    "hint:",
    "When you have resolved this problem",
    "If you prefer to skip this patch",
    "To restore the original branch",
)


@dataclass(frozen=True)
class Patch:
    source: str  # the file, with "#N" for the Nth message of a multi-message mbox
    subject: str  # without "[PATCH ...]" prefixes
    text: str  # the whole message, as git am reads it


@dataclass(frozen=True)
class Applied:
    base: str  # the base commit's sha
    head: str | None  # the branch head after everything applied; None on a conflict
    patches: tuple[PatchResult, ...]  # reverts first, then the series

    @property
    def ok(self) -> bool:
        return all(p.outcome is not PatchOutcome.CONFLICT for p in self.patches)


# --- reading patches ---------------------------------------------------------


def collect(paths: Sequence[Path]) -> tuple[Patch, ...]:
    """Read the series: patch files, directories of them, and mboxes, in order."""
    patches: list[Patch] = []
    for path in paths:
        if path.is_dir():
            files = _patch_files_in(path)
            if not files:
                raise UserError(f"{path}: no {'/'.join(SUFFIXES)} files in this directory")
            for file in files:
                patches.extend(_read_file(file, in_directory=True))
        elif path.is_file():
            patches.extend(_read_file(path, in_directory=False))
        else:
            raise UserError(f"{path}: no such patch file or directory")
    return tuple(patches)


def _patch_files_in(directory: Path) -> list[Path]:
    return sorted(
        (
            p
            for p in directory.iterdir()
            if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith(".")
        ),
        key=lambda p: p.name,
    )


def _read_file(path: Path, *, in_directory: bool) -> list[Patch]:
    try:
        # Bytes, not read_text(): universal newlines would strip the CRs that
        # patches to CRLF files need.
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from exc
    messages = split_mbox(text)
    patches: list[Patch] = []
    covers = 0
    for number, message in enumerate(messages, start=1):
        raw_subject = _raw_subject(message)
        if raw_subject is not None and is_cover_letter(raw_subject):
            covers += 1
            continue
        if not has_diff(message):
            continue  # e.g. a reply in a thread mbox
        source = f"{path}#{number}" if len(messages) > 1 else str(path)
        subject = clean_subject(raw_subject) if raw_subject is not None else path.stem
        patches.append(Patch(source=source, subject=subject, text=message))
    # A directory's cover letter is expected; any other file without a patch
    # is a mistake worth stopping for.
    if not patches and not (in_directory and messages and covers == len(messages)):
        raise UserError(f"{path}: contains no patch (no diff found)")
    return patches


def split_mbox(text: str) -> list[str]:
    """Split an mbox into its messages; text without "From " lines is one message."""
    starts = [m.start() for m in _POSTMARK.finditer(text)]
    if not starts or text[: starts[0]].strip():
        starts.insert(0, 0)
    bounds = [*starts, len(text)]
    messages = [text[a:b] for a, b in itertools.pairwise(bounds)]
    return [_unescape_mboxrd(m) for m in messages if m.strip()]


def _unescape_mboxrd(message: str) -> str:
    # lore/b4 write mboxrd, which quotes body lines starting with "From " as
    # ">From "; git am only undoes that when told, so undo it here.
    if message.startswith("From mboxrd@z "):
        return _MBOXRD_ESCAPE.sub(r"\1", message)
    return message


def has_diff(message: str) -> bool:
    if _DIFF.search(message):
        return True
    # Mailing lists may send the body quoted-printable or base64.
    return any(_DIFF.search(part) for part in _decoded_parts(message))


def _decoded_parts(message: str) -> Iterator[str]:
    msg = email.parser.Parser(policy=email.policy.default).parsestr(_strip_postmark(message))
    for part in msg.walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        try:
            yield str(part.get_content())
        except (LookupError, ValueError):  # unknown charset, bad encoding
            continue


def _strip_postmark(message: str) -> str:
    if _POSTMARK.match(message):
        return message.split("\n", 1)[1] if "\n" in message else ""
    return message


def _raw_subject(message: str) -> str | None:
    """The decoded, unfolded Subject header; None for a bare diff."""
    body = _strip_postmark(message)
    if not _HEADER_LINE.match(body):
        return None
    headers = email.parser.HeaderParser(policy=email.policy.default).parsestr(body)
    subject = headers.get("Subject")
    return " ".join(str(subject).split()) if subject is not None else None


def clean_subject(subject: str) -> str:
    """Strip "[PATCH v2 3/7]", "[RFC PATCH bpf-next]", "Re:" prefixes, like git am."""
    subject = " ".join(subject.split())
    while True:
        stripped = _SUBJECT_PREFIX.sub("", subject, count=1)
        if stripped == subject:
            return subject
        subject = stripped


def is_cover_letter(subject: str) -> bool:
    """True for "[PATCH 0/N] ..."-style subjects (any leading tag ending in 0/N)."""
    for match in re.finditer(r"\s*\[([^\]]*)\]", subject):
        if _COVER_TAG.search(match.group(1)):
            return True
        rest = subject[match.end() :]
        if not rest.lstrip().startswith("["):
            break
    return False


# --- applying ----------------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    source: str
    subject: str
    revert: bool
    action: Callable[[Path, _Step], PatchResult]

    def run(self, repo: Path) -> PatchResult:
        return self.action(repo, self)

    def result(self, outcome: PatchOutcome, **kwargs: Any) -> PatchResult:
        return PatchResult(self.source, self.subject, outcome, revert=self.revert, **kwargs)


def apply(
    repo: Path,
    base: str,
    branch: str,
    patches: Sequence[Patch],
    reverts: Sequence[Revert] = (),
) -> Applied:
    """Force `branch` to `base` in the work tree `repo`, then revert and apply.

    Stops at the first conflict: the rest are NOT_ATTEMPTED and head is None.
    The work tree is left clean on the branch whatever happened.
    """
    base_sha = _resolve_base(repo, base)
    steps = [s for r in reverts for s in _revert_steps(repo, r)]
    steps += [_apply_step(p) for p in patches]
    _switch(repo, branch, base_sha)
    results: list[PatchResult] = []
    for index, step in enumerate(steps):
        result = step.run(repo)
        results.append(result)
        if result.outcome is PatchOutcome.CONFLICT:
            results += [s.result(PatchOutcome.NOT_ATTEMPTED) for s in steps[index + 1 :]]
            return Applied(base=base_sha, head=None, patches=tuple(results))
    return Applied(base=base_sha, head=_head(repo), patches=tuple(results))


def _resolve_base(repo: Path, base: str) -> str:
    if not repo.is_dir():
        raise InfraError(f"{repo}: work tree for applying patches does not exist")
    found = git(repo, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}", check=False)
    if not found.ok:
        raise UserError(f"{base}: no such commit in {repo}")
    return found.stdout.strip()


def _switch(repo: Path, branch: str, base_sha: str) -> None:
    """Check out a fresh `branch` at base, dropping whatever a crash left behind.

    checkout -f rewrites only the files that differ, so unchanged sources keep
    their mtime and the next incremental build stays incremental (no clean).
    """
    git(repo, "am", "--quit", check=False)  # fails harmlessly when no am is running
    git(repo, "revert", "--quit", check=False)
    git(repo, "checkout", "-q", "-f", "-B", branch, base_sha, env=_ENV)


def _head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").stdout.strip()


# --- patches -----------------------------------------------------------------


def _apply_step(patch: Patch) -> _Step:
    return _Step(patch.source, patch.subject, False, lambda repo, s: _apply_patch(repo, s, patch))


def _apply_patch(repo: Path, step: _Step, patch: Patch) -> PatchResult:
    check = _check(repo, patch.text, reverse=False)
    if not check.ok and _check(repo, patch.text, reverse=True).ok:
        return step.result(PatchOutcome.ALREADY_APPLIED)  # it does not apply, its inverse does
    before = _head(repo)
    am = git(repo, "am", "--3way", "--keep-cr", stdin=_as_mail(patch), env=_ENV, check=False)
    if am.ok:
        head = _head(repo)
        if head == before:  # am's "No changes -- Patch already applied."
            return step.result(PatchOutcome.ALREADY_APPLIED)
        return step.result(PatchOutcome.APPLIED, commit=head)
    files = _conflict_files(repo, check, patch.text)
    git(repo, "am", "--abort", check=False)
    git(repo, "reset", "-q", "--hard", "HEAD")  # in case am gave up before its state was written
    return step.result(PatchOutcome.CONFLICT, files=files, output=_output(am))


def _check(repo: Path, text: str, *, reverse: bool) -> CmdResult:
    """`git apply --check`: would the patch (or its inverse) apply as it is?"""
    direction = ("--reverse",) if reverse else ()
    return git(repo, "apply", "--check", *direction, stdin=text, check=False)


def _as_mail(patch: Patch) -> str:
    """The message with the headers git am needs and that keep commits reproducible.

    Without a Date: am would use the current time as author date; a bare diff
    has no headers at all.
    """
    text = patch.text
    postmark = ""
    if _POSTMARK.match(text):
        postmark, _, text = text.partition("\n")
        postmark += "\n"
    if not _HEADER_LINE.match(text):
        text = f"\n{text}"  # a bare diff: an empty header block we fill below
    present = {name.lower() for name in _header_names(text)}
    missing = {
        "from": "From: orchestrate <orchestrate@localhost>",
        "date": f"Date: {FIXED_DATE_RFC2822}",
        "subject": f"Subject: {patch.subject}",
    }
    added = "".join(f"{line}\n" for name, line in missing.items() if name not in present)
    return postmark + added + text


def _header_names(text: str) -> Iterator[str]:
    for line in text.splitlines():
        if not line.strip():
            return
        match = _HEADER_LINE.match(line)
        if match:
            yield match.group(0)[:-1]


# --- reverts -----------------------------------------------------------------


def _revert_steps(repo: Path, revert: Revert) -> list[_Step]:
    if revert.patch is not None:
        # A file of several patches is undone last one first.
        return [_revert_patch_step(p) for p in reversed(collect([revert.patch]))]
    if not revert.commit:
        raise UserError("a revert needs a commit or a patch")
    found = git(repo, "log", "-1", "--format=%s", revert.commit, "--", check=False)
    subject = found.stdout.strip() if found.ok else revert.commit
    commit = revert.commit
    return [_Step(f"commit:{commit}", subject, True, lambda r, s: _revert_commit(r, s, commit))]


def _revert_commit(repo: Path, step: _Step, commit: str) -> PatchResult:
    sha = git(repo, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}", check=False)
    if not sha.ok:
        # The variant fails but the run goes on: other variants may not need it.
        return step.result(PatchOutcome.CONFLICT, output=f"{commit}: no such commit")
    res = git(repo, "revert", "--no-edit", sha.stdout.strip(), env=_REVERT_ENV, check=False)
    if res.ok:
        return step.result(PatchOutcome.APPLIED, commit=_head(repo))
    output = _output(res)
    files = _unmerged(repo)
    git(repo, "revert", "--abort", check=False)
    git(repo, "reset", "-q", "--hard", "HEAD")
    if not files and "nothing to commit" in res.stdout:
        return step.result(PatchOutcome.ALREADY_APPLIED)  # already reverted in base
    return step.result(PatchOutcome.CONFLICT, files=files, output=output)


def _revert_patch_step(patch: Patch) -> _Step:
    return _Step(patch.source, patch.subject, True, lambda repo, s: _revert_patch(repo, s, patch))


def _revert_patch(repo: Path, step: _Step, patch: Patch) -> PatchResult:
    check = _check(repo, patch.text, reverse=True)
    if not check.ok and _check(repo, patch.text, reverse=False).ok:
        return step.result(PatchOutcome.ALREADY_APPLIED)  # already undone in the base
    res = git(repo, "apply", "--reverse", "--index", "--3way", stdin=patch.text, check=False)
    if not res.ok:
        files = _conflict_files(repo, check, patch.text)
        git(repo, "reset", "-q", "--hard", "HEAD")
        return step.result(PatchOutcome.CONFLICT, files=files, output=_output(res))
    if git(repo, "diff", "--cached", "--quiet", check=False).ok:
        return step.result(PatchOutcome.ALREADY_APPLIED)  # the 3-way merge changed nothing
    message = f'Revert "{patch.subject}"\n\nThis reverts the patch {patch.source}.\n'
    git(repo, "commit", "-q", "--no-verify", "-F", "-", stdin=message, env=_REVERT_ENV)
    return step.result(PatchOutcome.APPLIED, commit=_head(repo))


# --- conflict details --------------------------------------------------------


def _output(res: CmdResult) -> str:
    """What git said, without its advice on how to resume."""
    lines = (res.stdout + res.stderr).splitlines()
    text = "\n".join(line for line in lines if not line.startswith(_RESUME_ADVICE)).strip()
    if len(text) > OUTPUT_LIMIT:
        text = text[:OUTPUT_LIMIT] + "\n[... output truncated]"
    return text


def _conflict_files(repo: Path, check: CmdResult, text: str) -> tuple[str, ...]:
    """Unmerged paths after a 3-way merge, else the files `check` rejected, else all.

    The check's output is used because am, when it can fall back to a 3-way
    merge, does not say which files failed to apply.
    """
    return _unmerged(repo) or _rejected(check.stdout + check.stderr) or _files_in(text)


def _unmerged(repo: Path) -> tuple[str, ...]:
    res = git(repo, "diff", "--name-only", "--diff-filter=U", check=False)
    return tuple(dict.fromkeys(res.stdout.split()))


def _rejected(output: str) -> tuple[str, ...]:
    found = (_FAILED_FILE.match(line) for line in output.splitlines())
    return tuple(dict.fromkeys(next(g for g in m.groups() if g) for m in found if m))


def _files_in(text: str) -> tuple[str, ...]:
    names = (m.group(1) for m in _PATCH_FILES.finditer(text))
    return tuple(dict.fromkeys(n for n in names if n != "/dev/null"))
