"""`orchestrate reply --send`: a real SMTP server on 127.0.0.1 receives the reply.

aiosmtpd's Controller runs the server in a thread on a free loopback port;
the message it gets is parsed with the email package.  Plain SMTP, a login,
STARTTLS with a certificate made for the test, a refused login, a server
that is not there, and git send-email configured as a user configures it.
"""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from orchestrator import cli, proc, results
from orchestrator.vm.qemu import free_port
from tests.unit.test_export_kcidb import SERIES
from tests.unit.test_reply import ME, mailed

pytestmark = pytest.mark.integration

USER, PASSWORD = "bot", "s3cret"


@dataclass
class Inbox:
    """What the server was handed: (envelope sender, recipients, message) per mail."""

    mails: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    answer: str = "250 OK"  # what DATA gets once the message is in

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if not self.answer.startswith("250"):
            return self.answer
        content = envelope.original_content or b""
        msg = message_from_bytes(content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        self.mails.append((str(envelope.mail_from), list(envelope.rcpt_tos), msg))
        return "250 OK"

    def login(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            USER.encode(),
            PASSWORD.encode(),
        )
        if ok:
            self.logins.append(USER)
        return AuthResult(success=ok, handled=False)  # a failure is answered 535


@dataclass
class Server:
    inbox: Inbox
    port: int


def _serve(inbox: Inbox, **options: Any) -> Iterator[Server]:
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield Server(inbox, port)
    finally:
        controller.stop()


@pytest.fixture()
def smtp() -> Iterator[Server]:
    inbox = Inbox()
    yield from _serve(inbox)


@pytest.fixture()
def smtp_login() -> Iterator[Server]:
    inbox = Inbox()
    yield from _serve(inbox, authenticator=inbox.login, auth_require_tls=False)


@pytest.fixture()
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with openssl."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    proc.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", key, "-out", cert],
        timeout=60,
    ).check()  # fmt: skip
    return cert, key


@pytest.fixture()
def results_path(tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    path = folder / "results.json"
    results.write(mailed(), path)
    return path


def _check_received(server: Server, eml: Path) -> EmailMessage:
    ((sender, rcpts, msg),) = server.inbox.mails
    assert sender == "bot@ci.example.org"
    assert sorted(rcpts) == sorted(["dev@example.org", "bpf@vger.kernel.org"])
    assert msg["In-Reply-To"] == f"<{SERIES.message_id}>"
    assert msg["References"] == f"<{SERIES.message_id}>"
    assert msg["Subject"] == f"Re: {SERIES.subject}"
    assert msg["To"] == SERIES.author and msg["Cc"] == "bpf@vger.kernel.org"
    written = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert msg["Message-ID"] == written["Message-ID"]  # the message that was written
    body = msg.get_body(("plain",))
    assert body is not None and "orchestrate report: matrix.yaml" in body.get_content()
    (attachment,) = msg.iter_attachments()
    assert attachment.get_filename() == "report.html" and "<html" in attachment.get_content()
    return msg


def test_send_through_a_local_smtp_server(
    smtp: Server, results_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["reply", str(results_path), "--from", ME, "--send", "smtp"]
    assert cli.main([*argv, "--smtp", f"127.0.0.1:{smtp.port}"]) == 0
    assert f"sent through 127.0.0.1:{smtp.port}" in capsys.readouterr().out
    _check_received(smtp, results_path.parent / "reply.eml")


def test_send_with_a_login(
    smtp_login: Server, results_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATE_SMTP", f"127.0.0.1:{smtp_login.port}")
    monkeypatch.setenv("ORCHESTRATE_SMTP_PASSWORD", PASSWORD)
    argv = ["reply", str(results_path), "--from", ME, "--send", "smtp", "--smtp-user", USER]
    assert cli.main(argv) == 0
    assert smtp_login.inbox.logins == [USER]
    _check_received(smtp_login, results_path.parent / "reply.eml")


def test_a_refused_login_is_exit_2_and_nothing_sent(
    smtp_login: Server,
    results_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ORCHESTRATE_SMTP_PASSWORD", "wrong")
    argv = ["reply", str(results_path), "--from", ME, "--send", "smtp", "--smtp-user", USER]
    assert cli.main([*argv, "--smtp", f"127.0.0.1:{smtp_login.port}"]) == 2
    assert "login refused: 535" in capsys.readouterr().err
    assert smtp_login.inbox.mails == []


def test_starttls(
    tls: tuple[Path, Path], results_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tls
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    inbox = Inbox()
    for server in _serve(inbox, tls_context=context, require_starttls=True):
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts the test's CA
        argv = ["reply", str(results_path), "--from", ME, "--send", "smtp"]
        argv += ["--smtp", f"127.0.0.1:{server.port}", "--smtp-security", "starttls"]
        assert cli.main(argv) == 0
        _check_received(server, results_path.parent / "reply.eml")


@pytest.mark.parametrize(
    ("answer", "code", "said"),
    [
        ("550 5.7.1 Content-Policy reject: HTML", 2, "refused: 550 5.7.1 Content-Policy"),
        ("451 4.3.0 try again later", 3, "451 4.3.0 try again later; nothing sent"),
    ],
)
def test_a_message_the_server_refuses(
    smtp: Server,
    results_path: Path,
    capsys: pytest.CaptureFixture[str],
    answer: str,
    code: int,
    said: str,
) -> None:
    """Refused for good (5xx) is the user's to fix (exit 2); for now (4xx), exit 3."""
    smtp.inbox.answer = answer
    argv = ["reply", str(results_path), "--from", ME, "--send", "smtp"]
    assert cli.main([*argv, "--smtp", f"127.0.0.1:{smtp.port}"]) == code
    assert said in capsys.readouterr().err


def test_no_server_is_exit_3_and_the_reply_kept(
    results_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nothing listens there
    argv = ["reply", str(results_path), "--from", ME, "--send", "smtp"]
    assert cli.main([*argv, "--smtp", f"127.0.0.1:{port}"]) == 3
    err = capsys.readouterr().err
    assert f"SMTP 127.0.0.1:{port}:" in err and "nothing sent" in err
    assert (results_path.parent / "reply.eml").is_file()


def _git_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    config = tmp_path / "gitconfig"
    config.write_text(text)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


def _has_send_email() -> bool:
    """git send-email and the Perl modules it loads (Debian: git-email, libmailtools-perl)."""
    said = proc.run(["git", "send-email", "--dump-aliases"], timeout=60)
    return said.ok  # 1: not a git command; 2: a Perl module missing


@pytest.mark.skipif(not _has_send_email(), reason="no working git send-email (Debian: git-email)")
def test_send_with_git_send_email(
    smtp: Server, results_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """git send-email as a user configures it; the sender from git's user.* too."""
    _git_config(
        tmp_path,
        monkeypatch,
        "[user]\n\tname = Test Bot\n\temail = bot@ci.example.org\n"
        f"[sendemail]\n\tsmtpServer = 127.0.0.1\n\tsmtpServerPort = {smtp.port}\n",
    )
    assert cli.main(["reply", str(results_path), "--send", "git"]) == 0
    msg = _check_received(smtp, results_path.parent / "reply.eml")
    assert msg["From"] == ME


def test_git_send_email_missing_or_failing_is_exit_3(
    results_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()  # nothing listens there
    _git_config(
        tmp_path,
        monkeypatch,
        f"[sendemail]\n\tsmtpServer = 127.0.0.1\n\tsmtpServerPort = {port}\n",
    )
    assert cli.main(["reply", str(results_path), "--from", ME, "--send", "git"]) == 3
    err = capsys.readouterr().err
    assert "git send-email" in err and "the reply is in" in err
    assert shutil.which("git") is not None
