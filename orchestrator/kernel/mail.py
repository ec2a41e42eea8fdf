"""A series from the list, through b4: the newest revision, its trailers, order and cover.

A variant's `series:` may name a mail thread instead of patch files (config.py
reads it into matrix.MailSource):

    series: {mbox: thread.mbox, message-id: 20230101.1234-1-a@b.c}   # offline
    series: {b4: 20230101.1234-1-a@b.c}                              # from lore
    series: https://lore.kernel.org/bpf/20230101.1234-1-a@b.c/

:func:`fetch` runs in the variant's apply unit, so `orchestrate plan` needs no
network and a bad thread (an unknown Message-ID, no patches, a broken mbox,
no network) fails that variant's APPLY stage with the reason while the other
variants go on.  b4's CLI does the mail work, through proc.run with a timeout
and with HOME and the XDG directories inside the cache (b4 writes nothing to
the user's home): `b4 mbox` fetches a thread from lore, `b4 am -m THREAD`
picks the newest revision, adds the trailers of the replies, orders the
patches and finds the cover letter.  Its output mbox is read by
series.collect's reader like any other, and the series is recorded as a
results.MailSeries: the thread's Message-ID, subject, revision, author,
base-commit, To and Cc, and each patch's Message-ID and `git patch-id`.

b4 0.16's `b4 am -m MBOX` also looks up extra trailers on lore; without a
network that look-up fails in a second and b4 goes on with the thread's own
trailers (*measured*), which the apply log says.  Should the look-up hang
instead, b4 is run again in its offline mode.

Mail is hostile: files are read up to MAX_MBOX, header values are unfolded,
their control characters shown (textfmt.printable) and clipped, and at most
MAX_ADDRESSES addresses are kept.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import email.utils
import re
import shutil
import sys
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator import proc
from orchestrator.errors import UserError
from orchestrator.kernel import series
from orchestrator.matrix import MailSource
from orchestrator.proc import CmdResult
from orchestrator.results import MailPatch, MailSeries
from orchestrator.textfmt import clip, printable, quote

LORE = "https://lore.kernel.org"
MAX_MBOX = 64 * 1024 * 1024  # bytes of a thread; a long review thread is a few MB
MAX_MESSAGE_ID = 250  # characters; RFC 5322 lines stop at 998, real ones at ~80
MAX_FIELD = 1000  # characters kept of a header value
MAX_ADDRESSES = 200  # of a To: or Cc:
MBOX_TIMEOUT = 120.0  # b4 am on a local thread (its trailer look-up included)
FETCH_TIMEOUT = 300.0  # b4 mbox from lore
B4_LOG_LIMIT = 20000  # characters of b4's output kept in the apply log

_MSGID = re.compile(r"^[!-;=?-~]+$")  # printable ASCII without space, < or >
# https://lore.kernel.org/LIST/MSGID/ (and /T/, /raw, #anchors), https://patch.msgid.link/MSGID
_LORE_URL = re.compile(
    r"^https?://(?:lore\.kernel\.org/[^/?#]+|patch\.msgid\.link)/([^/?#]+)(?:[/?#].*)?$"
)
_BRACKETS = re.compile(r"\s*(?:(?:re|fwd?):\s*)*\[([^\]]*)\]", re.IGNORECASE)
_VERSION = re.compile(r"(?:^|[\s,_/-]|patch|rfc)v(\d{1,4})\b", re.IGNORECASE)
_TRAILER = re.compile(r"^([A-Za-z][A-Za-z0-9-]*):[ \t]*(\S.*?)\s*$")
_BASE_COMMIT = re.compile(r"^base-commit:[ \t]*([0-9a-f]{7,64})[ \t]*$", re.MULTILINE)
# What b4 prints when a look-up on lore fails (b4/__init__.py, liblore).
_LOOKUP_FAILED = ("Request to http", "Server returned an error", "Could not retrieve thread")


class MailError(UserError):
    """A thread that gives no series: the variant's APPLY stage fails with this reason.

    `log` is what b4 said on the way, for the apply log.
    """

    def __init__(self, reason: str, log: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.log = log


@dataclass(frozen=True)
class Fetched:
    patches: tuple[series.Patch, ...]  # in order, trailers added, for series.apply
    series: MailSeries
    log: str  # what b4 did and what it could not, for the apply log


# --- pure parsing -----------------------------------------------------------------------


def message_id(text: str) -> str:
    """A Message-ID as a user or a header writes it ("<a@b>", " a@b ") without <>.

    ValueError, with a message for the user, when it cannot be one; one that
    starts with "-" is refused too (it would be an option to b4).
    """
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if not text:
        raise ValueError("an empty Message-ID")
    if len(text) > MAX_MESSAGE_ID:
        raise ValueError(f"a Message-ID of {len(text)} characters (limit {MAX_MESSAGE_ID})")
    if not _MSGID.match(text) or "@" not in text or text.startswith("-"):
        raise ValueError(
            f"not a Message-ID: {quote(text, 80)} (expected something like "
            "20230101.1234-1-name@example.org, without spaces)"
        )
    return text


def message_id_from_url(url: str) -> str:
    """The Message-ID in a lore URL: https://lore.kernel.org/LIST/MESSAGE-ID/ (ValueError)."""
    found = _LORE_URL.match(url.strip())
    if found is None:
        raise ValueError(
            f"not a lore URL: {quote(url, 80)}; expected https://lore.kernel.org/LIST/MESSAGE-ID/ "
            "(for another archive, download the thread and use {mbox: FILE})"
        )
    return message_id(urllib.parse.unquote(found.group(1)))


def revision(subject: str) -> int:
    """N of "[PATCH vN 1/3]", "[RFC PATCH bpf-next v3]", "[PATCHv2]"; 1 without one."""
    for tags in _prefix_tags(subject):
        found = _VERSION.search(tags)
        if found:
            return max(1, int(found.group(1)))
    return 1


def _prefix_tags(subject: str) -> list[str]:
    """The text inside each leading [...] of a subject ("Re:" and "Fwd:" skipped)."""
    tags: list[str] = []
    rest = subject
    while True:
        found = _BRACKETS.match(rest)
        if found is None:
            return tags
        tags.append(found.group(1))
        rest = rest[found.end() :]


def trailers(message: str) -> tuple[tuple[str, str], ...]:
    """The trailers of a patch mail's commit message, in order: (("Reviewed-by", "A <a@b>"), …).

    Trailers are the last paragraph of the message before the "---" line,
    every line of which is "Token: value".
    """
    body = _body(_parse(message))
    commit_message = re.split(r"^---[ \t]*$", body, maxsplit=1, flags=re.MULTILINE)[0]
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", commit_message.strip()) if p.strip()]
    if not paragraphs:
        return ()
    found = [_TRAILER.match(line) for line in paragraphs[-1].splitlines()]
    if not all(found):
        return ()
    return tuple((m.group(1), _clean(m.group(2))) for m in found if m)


def base_commit(text: str) -> str | None:
    """The SHA of a "base-commit: SHA" line (git format-patch --base), if any."""
    found = _BASE_COMMIT.search(text)
    return found.group(1) if found else None


def addresses(value: str | None) -> tuple[str, ...]:
    """The addresses of a To: or Cc: value as "Name <addr>" (or "addr"), each once."""
    if not value:
        return ()
    out: list[str] = []
    for name, addr in email.utils.getaddresses([value]):
        addr = _clean(addr)
        if "@" not in addr or " " in addr:
            continue
        shown = email.utils.formataddr((_clean(name), addr))
        if shown not in out:
            out.append(shown)
        if len(out) == MAX_ADDRESSES:
            break
    return tuple(out)


def _clean(value: str) -> str:
    """A header value that is one line, shows its control characters and is bounded."""
    return clip(" ".join(printable(value).split()), MAX_FIELD)


def _parse(message: str) -> email.message.EmailMessage:
    if message.startswith("From "):
        message = message.partition("\n")[2]
    parser = email.parser.Parser(policy=email.policy.default)
    parsed = parser.parsestr(message)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def _header(msg: email.message.Message, name: str) -> str:
    """A header's decoded, unfolded value; "" when absent or beyond repair."""
    try:
        value = msg.get(name)
        return "" if value is None else " ".join(str(value).split())
    except (ValueError, LookupError, TypeError, AttributeError):  # the parser's defects
        return ""


def _body(msg: email.message.Message) -> str:
    for part in msg.walk():
        if part.is_multipart() or part.get_content_type() != "text/plain":
            continue
        try:
            return str(part.get_content())  # type: ignore[attr-defined]
        except (LookupError, ValueError, AttributeError):  # an unknown charset, bad encoding
            payload = part.get_payload(decode=True)
            return payload.decode(errors="replace") if isinstance(payload, bytes) else ""
    return ""


# --- reading a thread ------------------------------------------------------------------


def read_thread(path: Path) -> list[str]:
    """The messages of an mbox file or a maildir, read with bounds (MailError when it cannot)."""
    if path.is_dir():
        if not all((path / sub).is_dir() for sub in ("cur", "new", "tmp")):
            raise MailError(f"{path}: a directory, but not a maildir (no cur/, new/, tmp/)")
        files = sorted(p for sub in ("cur", "new") for p in (path / sub).iterdir() if p.is_file())
        texts = [_read(f) for f in files]
    else:
        texts = series.split_mbox(_read(path))
    return texts


def _read(path: Path) -> str:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_MBOX + 1)
    except OSError as exc:
        raise MailError(f"{path}: cannot read: {exc.strerror}") from exc
    if len(raw) > MAX_MBOX:
        raise MailError(f"{path}: larger than {MAX_MBOX // 2**20} MiB; not a mail thread")
    return raw.decode("utf-8", errors="replace")


def _ids(texts: Sequence[str]) -> dict[str, email.message.Message]:
    out: dict[str, email.message.Message] = {}
    for msg in map(_parse, texts):
        try:
            mid = message_id(_header(msg, "Message-ID"))
        except ValueError:
            continue
        out.setdefault(mid, msg)
    return out


def _check_thread(path: Path, wanted: str, messages: list[str]) -> None:
    """The reasons b4 would give in fewer words, checked before it runs."""
    ids = _ids(messages)
    if not ids:
        raise MailError(f"{path}: not an mbox (no mail with a Message-ID in it)")
    if wanted and wanted not in ids:
        raise MailError(f"{path}: no message <{wanted}> in it ({len(ids)} messages)")
    if not any(series.has_diff(text) for text in messages):
        raise MailError(f"{path}: the thread has no patches (no message with a diff)")


# --- b4 -------------------------------------------------------------------------------


def fetch(source: MailSource, work: Path, home: Path, *, lore: str = LORE) -> Fetched:
    """The series a thread holds, through b4; MailError when there is none.

    `work` is emptied and holds b4's output (thread.mbox when fetched,
    series.mbx, series.cover); `home` is b4's HOME and XDG directories (its
    cache of lore look-ups).  `lore` is the archive b4 asks (tests point it at
    a closed port).
    """
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log: list[str] = []
    try:
        return _fetch(source, work, home, lore, log)
    except MailError as exc:
        raise MailError(exc.reason, "".join(log)) from None


def _fetch(source: MailSource, work: Path, home: Path, lore: str, log: list[str]) -> Fetched:
    if source.mbox is None:
        if not source.message_id:
            raise MailError("a b4 series needs a Message-ID")
        thread = work / "thread.mbox"
        mbox = ["mbox", "-o", str(work), "-n", thread.name, "--", source.message_id]
        got = _b4(mbox, work, home, lore, FETCH_TIMEOUT)
        log.append(_b4_log(got))
        if not got.ok or not thread.is_file():
            raise MailError(_fetch_failure(source.message_id, got, lore))
    else:
        thread = source.mbox
    messages = read_thread(thread)
    _check_thread(thread, source.message_id, messages)
    out = work / "b4"
    am = ["am", "-o", str(out), "-n", "series", "-m", str(thread)]
    if source.message_id:
        am += ["--", source.message_id]
    got = _b4(am, work, home, lore, MBOX_TIMEOUT)
    log.append(_b4_log(got))
    if got.timed_out:
        log.append("b4 timed out looking up trailers on lore: again in offline mode\n")
        got = _b4(["--offline-mode", *am], work, home, lore, MBOX_TIMEOUT)
        log.append(_b4_log(got))
    elif any(marker in got.stdout + got.stderr for marker in _LOOKUP_FAILED):
        log.append(
            f"note: b4 could not reach {lore} to look up more trailers (no network?); "
            "the series carries the trailers found in the thread only\n"
        )
    mbx = out / "series.mbx"
    if not got.ok:
        raise MailError(f"b4 am {thread.name}: {_last_words(got)}")
    if not mbx.is_file():
        raise MailError(f"b4 found no patches in the thread of {_which(source, thread)}")
    cover = out / "series.cover"
    return _fetched(mbx, cover if cover.is_file() else None, messages, "".join(log))


def _b4(args: list[str], cwd: Path, home: Path, lore: str, timeout: float) -> CmdResult:
    """b4 of this Python environment, with everything it writes inside `home`."""
    config = [] if lore == LORE else ["-c", f"b4.midmask={lore}/all/%s"]
    env = {
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_STATE_HOME": str(home / "state"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0",
    }
    home.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "b4.command", "--no-stdin", *config, *args]
    return proc.run(argv, timeout=timeout, cwd=cwd, env=env)


def _b4_log(got: CmdResult) -> str:
    what = "timed out" if got.timed_out else f"exit {got.returncode}"
    words = clip((got.stdout + got.stderr).strip(), B4_LOG_LIMIT)
    shown = " ".join(a for a in got.argv[3:] if not a.startswith("b4.midmask"))
    return f"$ b4 {shown}  ({what})\n{printable(words)}\n"


def _last_words(got: CmdResult) -> str:
    if got.timed_out:
        return f"timed out after {got.duration:.0f}s"
    lines = [ln.strip() for ln in (got.stderr + got.stdout).splitlines() if ln.strip()]
    said = lines[-1].removeprefix("CRITICAL: ") if lines else f"exit {got.returncode}"
    return clip(printable(said), 300)


def _fetch_failure(msgid: str, got: CmdResult, lore: str) -> str:
    # b4 says "Request to URL failed (...), trying next host" when it reached no server.
    unreachable = got.timed_out or f"Request to {lore}" in got.stdout + got.stderr
    hint = " (no network?)" if unreachable else ""
    return f"cannot fetch <{msgid}> from {lore} with b4{hint}: {_last_words(got)}"


def _which(source: MailSource, thread: Path) -> str:
    return f"<{source.message_id}>" if source.message_id else f"the first message of {thread}"


def _fetched(mbx: Path, cover: Path | None, thread: list[str], log: str) -> Fetched:
    text = _read(mbx)
    try:
        read = series.collect([mbx])
    except UserError as exc:
        raise MailError(f"b4's series: {exc}") from None
    patches = [series.Patch(f"{mbx}#{n}", p.subject, p.text) for n, p in enumerate(read, 1)]
    records = tuple(_mail_patch(p.text, mbx) for p in patches)
    head = _parse(_read(cover)) if cover is not None else _parse(patches[0].text)
    head_id = records[0].message_id if cover is None else _id_of(head, mbx)
    original = _ids(thread).get(head_id, head)
    subject = _clean(_header(head, "Subject"))
    got = MailSeries(
        message_id=head_id,
        subject=subject,
        revision=revision(subject),
        author=(addresses(_header(head, "From")) or ("",))[0],
        base_commit=base_commit(_body(head)) or base_commit(text),
        to=addresses(_header(original, "To")),
        cc=addresses(_header(original, "Cc")),
        patches=records,
    )
    return Fetched(tuple(patches), got, log + _summary(got, patches))


def _mail_patch(text: str, mbx: Path) -> MailPatch:
    msg = _parse(text)
    return MailPatch(
        message_id=_id_of(msg, mbx),
        subject=_clean(_header(msg, "Subject")),
        patch_id=patch_id(text),
    )


def _id_of(msg: email.message.Message, where: Path) -> str:
    try:
        return message_id(_header(msg, "Message-ID"))
    except ValueError as exc:
        subject = quote(_clean(_header(msg, "Subject")), 80)
        raise MailError(f"{where}: the message {subject} has no usable Message-ID: {exc}") from None


def patch_id(text: str) -> str:
    """`git patch-id --stable` of a patch mail's diff ("" when git finds no diff)."""
    got = proc.run(["git", "patch-id", "--stable"], timeout=60, stdin=text).check()
    return got.stdout.split()[0] if got.stdout.split() else ""


def _summary(got: MailSeries, patches: Sequence[series.Patch]) -> str:
    lines = [
        f"series: {got.subject} <{got.message_id}>",
        f"revision {got.revision}, by {got.author}, "
        f"base-commit {got.base_commit or '(none given)'}",
    ]
    for record, patch in zip(got.patches, patches, strict=True):
        lines.append(f"  {record.subject} <{record.message_id}> patch-id {record.patch_id[:12]}")
        lines += [f"    {token}: {value}" for token, value in trailers(patch.text)]
    return "\n".join(lines) + "\n"
