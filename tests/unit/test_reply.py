"""reply.py: the reply as a message, read back with Python's email package.

Sending it (a real SMTP server, git send-email) is tests/integration/test_reply.py.
"""

from __future__ import annotations

import dataclasses
import gzip
import shutil
from collections import Counter
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from orchestrator import cli, results
from orchestrator.errors import UserError
from orchestrator.reply import Attach, Reply, Security, Smtp, build, choose, write
from orchestrator.report import text as summary
from orchestrator.results import MailSeries, RunResult
from tests.unit.test_export_kcidb import SERIES
from tests.unit.test_report_junit import REAL, real_run, sample_run
from tests.unit.test_results_check import fuzz_cases

ME = "Test Bot <bot@ci.example.org>"
HTML = b"<!DOCTYPE html><html><body>report</body></html>\n"
WHEN = datetime(2026, 12, 6, 10, 15, tzinfo=UTC)


def mailed(mail: MailSeries | None = SERIES, variant: int = 1) -> RunResult:
    """The real run with one variant's series taken from the list."""
    run = real_run()
    variants = list(run.variants)
    variants[variant] = dataclasses.replace(variants[variant], mail=mail)
    return dataclasses.replace(run, variants=tuple(variants))


def reply_to(run: RunResult, **kw: object) -> Reply:
    options: dict[str, object] = {"sender": ME, "html": HTML, "now": WHEN, **kw}
    return build(run, choose(run, None, REAL), **options)  # type: ignore[arg-type]


def parsed(reply: Reply, tmp_path: Path) -> EmailMessage:
    """The message as a mail reader gets it: written to a file, parsed back."""
    path = tmp_path / "reply.eml"
    write(reply, path)
    raw = path.read_bytes()
    assert raw.isascii()  # every non-ASCII header is an encoded word, the body is QP
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    assert not msg.defects
    return msg


def test_a_reply_in_the_thread(tmp_path: Path) -> None:
    msg = parsed(reply_to(mailed()), tmp_path)
    assert msg["In-Reply-To"] == f"<{SERIES.message_id}>"
    assert msg["References"] == f"<{SERIES.message_id}>"
    assert msg["Subject"] == f"Re: {SERIES.subject}"
    assert msg["From"] == ME
    assert msg["To"] == SERIES.author
    assert msg["Cc"] == "bpf@vger.kernel.org"
    assert msg["Message-ID"].endswith("@ci.example.org>") and msg["Message-ID"].startswith("<")
    assert parsedate_to_datetime(msg["Date"]) == WHEN
    assert msg["X-Mailer"] == "orchestrate"


def test_the_summary_inline_and_the_report_attached(tmp_path: Path) -> None:
    run = mailed()
    msg = parsed(reply_to(run), tmp_path)
    assert msg.get_content_type() == "multipart/mixed"
    body = msg.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert text.startswith('Hi,\n\norchestrate tested "[PATCH v2 0/2] bpf: Handle reuse')
    words = " ".join(text.split())
    assert "(v2) on base 111111111111. The full report is attached (report.html)." in words
    assert text.endswith(summary.render(run))  # the summary, whole
    assert all(len(line) <= 72 for line in text.splitlines())
    (attachment,) = msg.iter_attachments()
    assert attachment.get_content_type() == "text/html"
    assert attachment.get_filename() == "report.html"
    assert attachment.get_content().encode() == HTML


def test_the_report_gzipped_or_not_at_all(tmp_path: Path) -> None:
    msg = parsed(reply_to(mailed(), attach=Attach.GZIP), tmp_path)
    (attachment,) = msg.iter_attachments()
    assert attachment.get_content_type() == "application/gzip"
    assert attachment.get_filename() == "report.html.gz"
    assert gzip.decompress(attachment.get_content()) == HTML
    plain = parsed(reply_to(mailed(), attach=Attach.NONE), tmp_path)
    assert plain.get_content_type() == "text/plain" and not list(plain.iter_attachments())
    assert "attached" not in plain.get_content()


def test_lists_and_people_in_cc_once_and_never_the_sender(tmp_path: Path) -> None:
    mail = dataclasses.replace(
        SERIES,
        to=("bpf@vger.kernel.org", "BPF <BPF@vger.kernel.org>", "bot@ci.example.org"),
        cc=("Alexei <ast@kernel.org>", "dev@example.org", "not an address"),
    )
    msg = parsed(reply_to(mailed(mail), cc=["netdev@vger.kernel.org"]), tmp_path)
    assert msg["To"] == SERIES.author
    cc = [a.addr_spec for a in msg["Cc"].addresses]
    assert cc == ["bpf@vger.kernel.org", "ast@kernel.org", "netdev@vger.kernel.org"]


def test_hostile_subject_and_names_cannot_add_headers(tmp_path: Path) -> None:
    mail = dataclasses.replace(
        SERIES,
        subject="[PATCH] x\r\nBcc: victim@example.org\r\n\r\nbody \x1b[31m \u202egnp.exe",
        author="Eve\r\nBcc: victim@example.org <eve@example.org>",
        cc=("Mallory <m@example.org>\nBcc: v@example.org",),
    )
    msg = parsed(reply_to(mailed(mail), to=["maintainer@example.org"]), tmp_path)
    assert msg["Bcc"] is None
    assert msg["Subject"] == (
        "Re: [PATCH] x Bcc: victim@example.org body \\x1b[31m <U+202E>gnp.exe"
    )
    # an author that is no address: the reply goes to --to alone
    assert msg["To"] == "maintainer@example.org"
    assert msg["Cc"] == "bpf@vger.kernel.org"
    with pytest.raises(UserError, match=r"author .* is not an address; give --to"):
        reply_to(mailed(mail))


def test_non_ascii_is_encoded_and_reads_back(tmp_path: Path) -> None:
    mail = dataclasses.replace(
        SERIES, subject="[PATCH] bpf: Grüße — ünïcode", author="Jörg Ünicode <j@example.org>"
    )
    path = tmp_path / "reply.eml"
    write(reply_to(mailed(mail)), path)
    raw = path.read_bytes()
    assert b"=?utf-8?" in raw and b"J\xc3\xb6rg" not in raw
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg["Subject"] == "Re: [PATCH] bpf: Grüße — ünïcode"
    assert msg["To"].addresses[0].display_name == "Jörg Ünicode"


def test_a_long_message_id_stays_one_word(tmp_path: Path) -> None:
    """Folded as the SMTP policy folds at 78 columns, it would become an encoded word
    and mail readers would lose the thread."""
    long_id = "20231201123456.1234567-1-" + "a" * 80 + "@mail.example.org"
    msg = parsed(reply_to(mailed(dataclasses.replace(SERIES, message_id=long_id))), tmp_path)
    raw = (tmp_path / "reply.eml").read_bytes()
    assert f"In-Reply-To: <{long_id}>\n".encode() in raw
    assert msg["References"] == f"<{long_id}>"


@pytest.mark.parametrize("bad", ["a b@c", "x>\r\nBcc: y@z", "no-at-sign", "<a@b>", "é@x.org"])
def test_a_bad_message_id_is_refused(bad: str) -> None:
    with pytest.raises(UserError, match="is not a Message-ID"):
        reply_to(mailed(dataclasses.replace(SERIES, message_id=bad)))


def test_subject_already_a_reply_is_not_doubled(tmp_path: Path) -> None:
    mail = dataclasses.replace(SERIES, subject="RE: [PATCH] x")
    assert parsed(reply_to(mailed(mail)), tmp_path)["Subject"] == "RE: [PATCH] x"


def test_no_mail_info_needs_to(tmp_path: Path) -> None:
    run = real_run()
    with pytest.raises(UserError, match=r"no mail for this series .* give --to"):
        reply_to(run)
    msg = parsed(reply_to(run, to=["someone@example.org"]), tmp_path)
    assert msg["In-Reply-To"] is None and msg["References"] is None
    assert msg["Subject"] == "orchestrate report: matrix.yaml"
    assert msg["To"] == "someone@example.org"


def test_choosing_the_variant() -> None:
    two = mailed()
    other = dataclasses.replace(SERIES, message_id="other@example.org")
    variants = (*two.variants[:2], dataclasses.replace(two.variants[2], mail=other))
    both = dataclasses.replace(two, variants=variants)
    with pytest.raises(UserError, match="different threads; choose one: --variant pre-fix, gfp"):
        choose(both, None, REAL)
    chosen = choose(both, "gfp-zero", REAL)
    assert chosen is not None and chosen.mail == other
    with pytest.raises(UserError, match="no such variant"):
        choose(both, "nope", REAL)
    with pytest.raises(UserError, match="was not taken from the list"):
        choose(both, "upstream", REAL)
    assert choose(real_run(), None, REAL) is None


@pytest.mark.parametrize("bad", ["", "not an address", "a@b, c@d", "x\r\n@y.org", "a@"])
def test_bad_addresses_from_the_user_are_refused(bad: str) -> None:
    with pytest.raises(UserError, match="not an e-mail address"):
        reply_to(mailed(), to=[bad])
    with pytest.raises(UserError, match="--from"):
        reply_to(mailed(), sender=bad)


def test_smtp_settings() -> None:
    assert Smtp.parse("127.0.0.1:2525") == Smtp("127.0.0.1", 2525, Security.NONE)
    assert Smtp.parse("smtp.example.org:587").security is Security.STARTTLS
    assert Smtp.parse("smtp.example.org:465").security is Security.SSL
    assert Smtp.parse("smtp.example.org") == Smtp("smtp.example.org", 25, Security.STARTTLS)
    assert Smtp.parse("[::1]:25").host == "::1"
    assert Smtp.parse("localhost:25", None, "me").user == "me"
    with pytest.raises(UserError, match="password would cross the network in clear"):
        Smtp.parse("smtp.example.org:25", Security.NONE, "me")
    for bad in ("", ":25", "host:0", "host:http"):
        with pytest.raises(UserError, match="expected HOST:PORT"):
            Smtp.parse(bad)


# --- the command ----------------------------------------------------------------


@pytest.fixture()
def results_dir(tmp_path: Path) -> Path:
    """A run directory whose results name a series from the list, and no report.html."""
    folder = tmp_path / "run"
    folder.mkdir()
    results.write(mailed(), folder / "results.json")
    return folder


def test_reply_command_writes_the_eml(
    results_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = results_dir / "results.json"
    assert cli.main(["reply", str(path), "--from", ME]) == 0
    out = capsys.readouterr().out
    assert f"reply: {results_dir / 'reply.eml'}" in out and "nothing sent" in out
    msg = message_from_bytes((results_dir / "reply.eml").read_bytes(), policy=policy.default)
    assert msg["In-Reply-To"] == f"<{SERIES.message_id}>"
    (attachment,) = msg.iter_attachments()  # rendered, since the run had none
    assert "<html" in attachment.get_content()
    assert not (results_dir / "report.html").exists()  # rendered aside, not into the run


def test_reply_command_attaches_the_runs_report(results_dir: Path, tmp_path: Path) -> None:
    (results_dir / "report.html").write_bytes(HTML)
    out = tmp_path / "elsewhere" / "r.eml"
    argv = ["reply", str(results_dir / "results.json"), "--from", ME, "--out", str(out)]
    assert cli.main(argv) == 0
    msg = message_from_bytes(out.read_bytes(), policy=policy.default)
    assert [a.get_content().encode() for a in msg.iter_attachments()] == [HTML]


def test_reply_command_without_mail_info_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(REAL, tmp_path / "results.json")
    assert cli.main(["reply", str(tmp_path / "results.json"), "--from", ME]) == 2
    err = capsys.readouterr().err
    assert "the results record no mail for this series" in err and "Traceback" not in err
    assert not (tmp_path / "reply.eml").exists()


def test_reply_command_needs_a_sender(
    results_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    assert cli.main(["reply", str(results_dir / "results.json")]) == 2
    assert "no sender: give --from" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--send", "smtp"], "--send smtp needs --smtp HOST:PORT"),
        (["--send", "smtp", "--smtp", "x:y"], "expected HOST:PORT"),
        (["--variant", "nope"], "no such variant"),
        (["--to", "bad"], "not an e-mail address"),
    ],
)
def test_reply_command_bad_options_are_exit_2(
    results_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.delenv("ORCHESTRATE_SMTP", raising=False)
    assert cli.main(["reply", str(results_dir / "results.json"), "--from", ME, *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (results_dir / "reply.eml").exists()


def test_reply_command_bad_results_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "results.json"
    path.write_text('{"schema": 2, "variants": [{"name": 1}]}')
    assert cli.main(["reply", str(path), "--from", ME]) == 2
    err = capsys.readouterr().err
    assert "not a results file" in err and "Traceback" not in err


def test_fuzzed_results_reply_or_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The results checker's fuzz: a reply that parses back, or exit 2, never a traceback."""
    path = tmp_path / "results.json"
    eml = tmp_path / "reply.eml"
    (tmp_path / "report.html").write_bytes(HTML)  # rendering is report's business
    codes: Counter[int] = Counter()
    for what, text in fuzz_cases(100):
        path.write_text(text)
        argv = ["reply", str(path), "--from", ME, "--to", "a@example.org", "--out", str(eml)]
        code = cli.main(argv)
        err = capsys.readouterr().err
        codes[code] += 1
        assert code in (0, 2), f"{what}: exit {code}: {err[:300]}"
        assert "Traceback" not in err
        if code == 0:
            msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
            assert msg["To"] == "a@example.org" and not msg.defects
    assert codes[0] > 0 and codes[2] > 0


def test_hostile_results_text_is_shown_not_obeyed(tmp_path: Path) -> None:
    run = sample_run(tmp_path / "logs")  # test output with escapes, NULs, HTML
    upstream = dataclasses.replace(run.variants[0], mail=SERIES)
    run = dataclasses.replace(run, variants=(upstream, *run.variants[1:]))
    body = parsed(reply_to(run), tmp_path).get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "\x1b" not in text and "\x00" not in text
    assert "\\x1b[31mred\\x1b[0m \\x00 \\x07" in text
