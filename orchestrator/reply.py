"""`orchestrate reply`: the run's verdict as a reply to the series on the list.

An RFC 5322 message (.eml) in the series' thread: In-Reply-To and
References name the cover letter (or the first patch) the results recorded,
the subject is "Re: <its subject>", the 72-column text summary is the body
and report.html is attached.  It goes to the series' author, with the lists
and people of the thread in Cc.  Nothing is sent unless asked: `send_smtp`
hands it to an SMTP server, `send_git` to `git send-email` (which uses the
user's own sendemail.* configuration).

Everything taken from the mail is hostile (a subject or a name may hold a
CR LF and a forged header, an escape sequence, a bidi override): names and
subjects are reduced to one line with nothing in it acting, addresses and
Message-IDs must look like addresses and Message-IDs or are refused, and
headers are written by the email package's SMTP policy (non-ASCII as
RFC 2047 encoded words).  Headers are folded only beyond 998 columns: the
policy would otherwise encode a long Message-ID in References, and mail
readers would no longer find the thread.
"""

from __future__ import annotations

import enum
import getpass
import gzip
import ipaddress
import os
import re
import smtplib
import ssl
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid
from pathlib import Path

from orchestrator import proc
from orchestrator.errors import InfraError, UserError
from orchestrator.report import text as summary
from orchestrator.report import write_reports
from orchestrator.results import MailSeries, RunResult, VariantResult
from orchestrator.textfmt import clip, printable, quote

# Fold headers only where RFC 5322 says a line MUST end (see above).
POLICY = policy.SMTP.clone(max_line_length=998)
FILE_POLICY = POLICY.clone(linesep="\n")  # the .eml as a Unix file (git send-email, mutt)
PASSWORD_ENV = "ORCHESTRATE_SMTP_PASSWORD"
MAX_ATTACHMENT = 10 * 1024 * 1024  # bytes of report.html; mailing lists take far less
SUBJECT = 300  # characters of a subject from the mail
NAME = 100  # characters of a display name
_MSGID = re.compile(r"[!-;=?-~]{1,250}@[!-;=?-~]{1,250}")  # printable ASCII, no <>
_ADDR = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})")
_RE = re.compile(r"re:\s*", re.IGNORECASE)


class Attach(enum.StrEnum):
    """How report.html travels: as HTML, gzipped (lists that refuse HTML parts), or not."""

    HTML = "html"
    GZIP = "gzip"
    NONE = "none"


class Security(enum.StrEnum):
    NONE = "none"  # plain SMTP (a relay on this machine)
    STARTTLS = "starttls"  # plain, then STARTTLS before anything else (port 587)
    SSL = "ssl"  # TLS from the first byte (port 465)


@dataclass(frozen=True)
class Smtp:
    """Where --send smtp goes: host:port, TLS, and a user when the server wants a login."""

    host: str
    port: int
    security: Security = Security.NONE
    user: str | None = None

    @classmethod
    def parse(cls, where: str, security: Security | None = None, user: str | None = None) -> Smtp:
        """HOST[:PORT] (default 25, 465 with ssl); security None: none on this machine,
        ssl on port 465, else starttls."""
        host, colon, port = where.rpartition(":")
        if not colon or host.endswith(":"):  # no port, or a bare IPv6 address
            host, port = where, "465" if security is Security.SSL else "25"
        host = host.strip("[]")  # [::1]:25
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(f"--smtp {quote(where)}: expected HOST:PORT, e.g. smtp.example.org:587")
        if security is None:
            security = (
                Security.NONE
                if _loopback(host)
                else Security.SSL
                if port == "465"
                else Security.STARTTLS
            )
        if user and security is Security.NONE and not _loopback(host):
            raise UserError(
                f"--smtp-user: a password would cross the network in clear to {host}; "
                "use --smtp-security starttls (or ssl)"
            )
        return cls(host, int(port), security, user or None)


@dataclass(frozen=True)
class Reply:
    """The message and what it answers (None: no thread, sent to --to only)."""

    message: EmailMessage
    series: MailSeries | None
    variant: str | None

    @property
    def recipients(self) -> list[str]:
        found = [a.addr_spec for key in ("To", "Cc") for a in _addresses_of(self.message, key)]
        return list(dict.fromkeys(found))


def choose(run: RunResult, variant: str | None, where: Path) -> VariantResult | None:
    """The variant whose series is answered: --variant, else the one series the run tested.

    None when no variant came from the list (the caller needs --to then).
    """
    if variant is not None:
        found = next((v for v in run.variants if v.name == variant), None)
        if found is None:
            names = ", ".join(v.name for v in run.variants)
            raise UserError(f"--variant {quote(variant)}: no such variant in {where} ({names})")
        if found.mail is None:
            raise UserError(
                f"{where}: variant {quote(variant)} was not taken from the list (no Message-ID "
                "recorded); give --to ADDRESS to write a reply outside any thread"
            )
        return found
    mailed = [v for v in run.variants if v.mail is not None]
    threads = {v.mail.message_id for v in mailed if v.mail is not None}
    if len(threads) > 1:
        names = ", ".join(v.name for v in mailed)
        raise UserError(
            f"{where}: variants answer different threads; choose one: --variant {names}"
        )
    return mailed[0] if mailed else None


def build(
    run: RunResult,
    variant: VariantResult | None,
    *,
    sender: str,
    html: bytes | None,
    to: Sequence[str] = (),
    cc: Sequence[str] = (),
    attach: Attach = Attach.HTML,
    where: Path = Path("results.json"),
    now: datetime | None = None,
) -> Reply:
    """The reply as a message; raises UserError when it would be addressed to no one."""
    me = parse_address(sender, "--from")
    mail = variant.mail if variant is not None else None
    extra_to = [parse_address(a, "--to") for a in to]
    extra_cc = [parse_address(a, "--cc") for a in cc]
    if mail is None and not extra_to:
        raise UserError(
            f"{where}: the results record no mail for this series (it came from local files), "
            "so there is no thread to answer; give --to ADDRESS to write a reply anyway"
        )
    msg = EmailMessage(policy=POLICY)
    msg["From"] = me
    recipients = _recipients(mail, extra_to, extra_cc, me, where)
    msg["To"] = recipients[0]
    if recipients[1]:
        msg["Cc"] = recipients[1]
    msg["Subject"] = _subject(run, mail)
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    msg["Message-ID"] = make_msgid("orchestrate", domain=me.domain or "localhost")
    if mail is not None:
        parent = f"<{_message_id(mail.message_id, where)}>"
        msg["In-Reply-To"] = parent
        msg["References"] = parent
    msg["X-Mailer"] = "orchestrate"
    body = _body(run, mail, attach if html is not None else Attach.NONE)
    msg.set_content(body, cte="7bit" if body.isascii() else "quoted-printable")
    if html is not None and attach is not Attach.NONE:
        _attach(msg, html, attach)
    return Reply(msg, mail, variant.name if variant is not None else None)


def report_html(results: Path, run: RunResult) -> bytes:
    """report.html beside the results, or rendered now (into a temporary directory) if missing."""
    path = results.parent / "report.html"
    if path.is_symlink():  # a run directory from elsewhere must not mail a file from here
        raise UserError(f"{path}: a symbolic link; not attached (use --attach none)")
    if not path.is_file():
        with tempfile.TemporaryDirectory(prefix="orchestrate-reply-") as tmp:
            (written,) = write_reports(run, Path(tmp), ["html"], run_dir=results.parent)
            return written.read_bytes()
    size = path.stat().st_size
    if size > MAX_ATTACHMENT:
        raise UserError(
            f"{path}: {size} bytes is too big to mail (at most {MAX_ATTACHMENT}); "
            "use --attach none and link to it"
        )
    return path.read_bytes()


def write(reply: Reply, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(reply.message.as_bytes(policy=FILE_POLICY))
    tmp.replace(path)


def send_smtp(reply: Reply, server: Smtp, password: str | None = None) -> list[str]:
    """Hand the message to an SMTP server; the recipients it refused (the rest got it)."""
    sender = _addresses_of(reply.message, "From")[0].addr_spec
    if server.user and password is None:
        password = _password(server)
    try:
        smtp: smtplib.SMTP
        if server.security is Security.SSL:
            smtp = smtplib.SMTP_SSL(
                server.host, server.port, timeout=60, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(server.host, server.port, timeout=60)
        with smtp:
            if server.security is Security.STARTTLS:
                smtp.starttls(context=ssl.create_default_context())
            if server.user:
                smtp.login(server.user, password or "")
            refused = smtp.send_message(reply.message, from_addr=sender, to_addrs=reply.recipients)
    except smtplib.SMTPAuthenticationError as exc:
        raise UserError(f"SMTP {server.host}:{server.port}: login refused: {_said(exc)}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise UserError(
            f"SMTP {server.host}:{server.port}: every recipient refused: "
            + ", ".join(exc.recipients)
        ) from None
    except smtplib.SMTPResponseException as exc:
        if 500 <= exc.smtp_code < 600:  # refused for good: the message or the options
            raise UserError(
                f"SMTP {server.host}:{server.port}: refused: {_said(exc)}; nothing sent"
            ) from None
        raise InfraError(f"SMTP {server.host}:{server.port}: {_said(exc)}; nothing sent") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise InfraError(f"SMTP {server.host}:{server.port}: {_said(exc)}; nothing sent") from None
    return sorted(refused)


def send_git(reply: Reply, path: Path, timeout: float = 300.0) -> str:
    """Hand the written .eml to `git send-email`, configured as the user configured it.

    It reads To, Cc, Subject, Message-Id and the threading headers from the
    file; --from keeps the file's From (else git adds its own and moves ours
    into the body), and the --suppress-cc options keep it from copying in
    anyone the file does not name.
    """
    sender = str(reply.message["From"])
    argv = [
        "git", "send-email", "--confirm=never", f"--from={sender}", "--no-thread",
        "--suppress-cc=author", "--suppress-cc=self", "--suppress-cc=body",
        "--suppress-cc=cccmd", "--no-validate", "--quiet", str(path),
    ]  # fmt: skip
    result = proc.run(argv, timeout=timeout)
    if not result.ok:
        said = clip(printable((result.stderr or result.stdout).strip()), 2000)
        raise InfraError(f"{result.describe()}: {said}; the reply is in {path}")
    return result.stdout


def default_sender() -> str | None:
    """The user's git identity ("Name <addr>"), as git send-email would use it.

    The one place that reads the user's git config: git.py ignores it on
    purpose (results must not depend on who runs the tool); a sender must.
    """
    found = []
    for key in ("user.name", "user.email"):
        try:
            result = proc.run(["git", "config", "--get", key], timeout=10)
        except InfraError:  # no git at all
            return None
        found.append(result.stdout.strip() if result.ok else "")
    name, addr = found
    if not addr:
        return None
    return f"{name} <{addr}>" if name else addr


def parse_address(text: str, where: str) -> Address:
    """One address a person gave (--from, --to): refused with a message if it is not one."""
    found = _address(text)
    if found is None:
        raise UserError(f"{where} {quote(text)}: not an e-mail address (Name <user@host>)")
    return found


# --- the parts ------------------------------------------------------------------


def _address(text: str) -> Address | None:
    """ "Name <addr>" as an Address, or None: hostile input never becomes a header."""
    if len(text) > 1000 or "\r" in text or "\n" in text:
        return None
    pairs = getaddresses([text])
    if len(pairs) != 1:
        return None
    name, addr = pairs[0]
    if not _ADDR.fullmatch(addr) or ".." in addr.partition("@")[2]:
        return None
    return Address(display_name=_line(name, NAME), addr_spec=addr)


def _line(text: str, limit: int) -> str:
    """Text from the mail as one header line: controls and bidi shown, whitespace one space."""
    return clip(printable(" ".join(text[: limit * 8].split())), limit)


def _recipients(
    mail: MailSeries | None,
    to: list[Address],
    cc: list[Address],
    me: Address,
    where: Path,
) -> tuple[tuple[Address, ...], tuple[Address, ...]]:
    """To: the author (and --to); Cc: the thread's lists and people (and --cc), once each."""
    author: list[Address] = []
    thread: list[Address] = []
    if mail is not None:
        found = _address(mail.author)
        if found is None and not to:
            raise UserError(
                f"{where}: the series' author {quote(mail.author)} is not an address; "
                "give --to ADDRESS"
            )
        author = [found] if found is not None else []
        thread = [a for a in map(_address, (*mail.to, *mail.cc)) if a is not None]
    seen = {me.addr_spec.lower()}
    to_list = _unique([*author, *to], seen)
    cc_list = _unique([*thread, *cc], seen)
    if not to_list:  # the author wrote to himself: answer on the lists
        to_list, cc_list = cc_list[:1], cc_list[1:]
    if not to_list:
        raise UserError(f"{where}: the reply would go to no one but you; give --to ADDRESS")
    return tuple(to_list), tuple(cc_list)


def _unique(addresses: Iterable[Address], seen: set[str]) -> list[Address]:
    out = []
    for a in addresses:
        if a.addr_spec.lower() not in seen:
            seen.add(a.addr_spec.lower())
            out.append(a)
    return out


def _message_id(text: str, where: Path) -> str:
    if not _MSGID.fullmatch(text):
        raise UserError(f"{where}: the series' Message-ID {quote(text)} is not a Message-ID")
    return text


def _subject(run: RunResult, mail: MailSeries | None) -> str:
    if mail is None:
        return _line(f"orchestrate report: {Path(run.matrix).name}", SUBJECT)
    subject = _line(mail.subject, SUBJECT)
    return subject if _RE.match(subject) else f"Re: {subject}"


def _body(run: RunResult, mail: MailSeries | None, attach: Attach) -> str:
    """A few words on what was tested, then the 72-column summary."""
    if mail is not None:
        what = f'orchestrate tested "{_line(mail.subject, SUBJECT)}"'
        what += f" (v{mail.revision})" if mail.revision > 1 else ""
        if mail.base_commit:
            what += f" on base {_line(mail.base_commit, 40)[:12]}"
        what += "."
    else:
        what = "orchestrate tested the series of this run."
    attached = {
        Attach.HTML: "The full report is attached (report.html).",
        Attach.GZIP: "The full report is attached (report.html.gz).",
        Attach.NONE: "",
    }[attach]
    intro = summary.wrap(f"{what} {attached}".strip(), "", "")
    # As write_reports does for summary.txt: nothing in the text acts (textfmt.printable).
    return "Hi,\n\n" + "\n".join(intro) + "\n\n" + printable(summary.render(run))


def _attach(msg: EmailMessage, html: bytes, attach: Attach) -> None:
    if len(html) > MAX_ATTACHMENT:
        raise UserError(f"report.html: {len(html)} bytes is too big to mail; use --attach none")
    if attach is Attach.GZIP:
        data = gzip.compress(html, mtime=0)
        msg.add_attachment(data, maintype="application", subtype="gzip", filename="report.html.gz")
    else:
        msg.add_attachment(html, maintype="text", subtype="html", filename="report.html")


def _addresses_of(msg: EmailMessage, key: str) -> tuple[Address, ...]:
    header = msg[key]
    return tuple(header.addresses) if header is not None else ()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _password(server: Smtp) -> str:
    password = os.environ.get(PASSWORD_ENV)
    if password is not None:
        return password
    if sys.stdin.isatty():
        return getpass.getpass(f"SMTP password for {server.user}@{server.host}: ")
    raise UserError(f"--smtp-user {server.user}: set {PASSWORD_ENV} (no terminal to ask on)")


def _said(exc: BaseException) -> str:
    """What a server or the network said, as one inert line."""
    if isinstance(exc, smtplib.SMTPResponseException):
        said = exc.smtp_error
        said = said.decode("utf-8", "replace") if isinstance(said, bytes) else said
        text = f"{exc.smtp_code} {said}"
    else:
        text = str(exc) or type(exc).__name__
    return clip(printable(" ".join(text.split())), 500)
