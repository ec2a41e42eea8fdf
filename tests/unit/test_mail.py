"""kernel/mail.py: a series from the list, the pure parts; and its record in results."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from orchestrator import config, results, results_check
from orchestrator.errors import MatrixError
from orchestrator.kernel import mail
from orchestrator.matrix import MailSource, Variant
from orchestrator.report import html
from orchestrator.report import text as report_text
from orchestrator.results import (
    MailPatch,
    MailSeries,
    RunResult,
    Stage,
    StageResult,
    Status,
    VariantResult,
)

SERIES = MailSeries(
    message_id="20230101.1234-0-a@b.c",
    subject="[PATCH v2 0/2] bpf: a series",
    revision=2,
    author="A Developer <a@b.c>",
    base_commit="0123456789abcdef0123456789abcdef01234567",
    to=("bpf@vger.kernel.org",),
    cc=("r@b.c", "s@b.c"),
    patches=(
        MailPatch("20230101.1234-1-a@b.c", "[PATCH v2 1/2] bpf: one", "ab" * 20),
        MailPatch("20230101.1234-2-a@b.c", "[PATCH v2 2/2] bpf: two", "cd" * 20),
    ),
)


def _run(mail: MailSeries | None) -> RunResult:
    stage = StageResult(Stage.APPLY, Status.PASS)
    variant = VariantResult("v", (stage,), mail=mail)
    return RunResult("m.yaml", "2026-01-01T00:00:00", "2026-01-01T00:00:01", (variant,))


@pytest.mark.parametrize("mail", [SERIES, dataclasses.replace(SERIES, base_commit=None), None])
def test_mail_series_round_trips_through_results_json(
    tmp_path: Path, mail: MailSeries | None
) -> None:
    path = tmp_path / "results.json"
    results.write(_run(mail), path)
    assert results.read(path).variants[0].mail == mail


def test_results_without_mail_still_read(tmp_path: Path) -> None:
    data = results.to_data(_run(None))
    del data["variants"][0]["mail"]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    assert results.read(path).variants[0].mail is None


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        (("revision",), "2", "variants[0].mail.revision: expected an integer"),
        (("to",), "bpf@vger", "variants[0].mail.to: expected a list"),
        (("base_commit",), 5, "variants[0].mail.base_commit: expected a string"),
        (("patches", 0, "patch_id"), None, "variants[0].mail.patches[0].patch_id: expected a str"),
        (("patches", 1), {"subject": "x", "patch_id": "y"}, "patches[1].message_id: missing"),
    ],
)
def test_results_check_rejects_bad_mail_fields(
    where: tuple[str | int, ...], value: object, message: str
) -> None:
    data = results.to_data(_run(SERIES))
    target = data["variants"][0]["mail"]
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    with pytest.raises(results_check.ResultsError, match=message.replace("[", r"\[")):
        results_check.check(RunResult, data)


# --- Message-IDs and lore URLs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20230101.1234-1-a@b.c", "20230101.1234-1-a@b.c"),
        (" <20230101.1234-1-a@b.c> ", "20230101.1234-1-a@b.c"),
        ("<a+b/c=d@[127.0.0.1]>", "a+b/c=d@[127.0.0.1]"),
    ],
)
def test_message_id_is_taken_without_brackets(text: str, expected: str) -> None:
    assert mail.message_id(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "an empty Message-ID"),
        ("<>", "an empty Message-ID"),
        ("no-at-sign", "not a Message-ID"),
        ("a b@c", "not a Message-ID"),
        ("a\x1b[2J@c", "not a Message-ID"),
        ("<a@b> <c@d>", "not a Message-ID"),
        ("--upgrade@x", "not a Message-ID"),  # would be an option to b4
        ("a@" + "b" * 300, "of 302 characters"),
    ],
)
def test_what_is_no_message_id(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        mail.message_id(text)


@pytest.mark.parametrize(
    "url",
    [
        "https://lore.kernel.org/bpf/20230101.1234-1-a@b.c/",
        "https://lore.kernel.org/bpf/20230101.1234-1-a@b.c",
        "https://lore.kernel.org/all/20230101.1234-1-a@b.c/T/#u",
        "https://lore.kernel.org/bpf/20230101.1234-1-a%40b.c/raw",
        "https://patch.msgid.link/20230101.1234-1-a@b.c",
    ],
)
def test_message_id_from_a_lore_url(url: str) -> None:
    assert mail.message_id_from_url(url) == "20230101.1234-1-a@b.c"


@pytest.mark.parametrize(
    "url",
    [
        "https://example.org/bpf/a@b.c/",
        "https://lore.kernel.org/bpf/",
        "https://lore.kernel.org/bpf/not-an-id/",
        "ftp://lore.kernel.org/bpf/a@b.c/",
    ],
)
def test_what_is_no_lore_url(url: str) -> None:
    with pytest.raises(ValueError, match=r"not a lore URL|not a Message-ID"):
        mail.message_id_from_url(url)


# --- subjects, trailers, headers -----------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "revision"),
    [
        ("[PATCH 0/3] bpf: x", 1),
        ("[PATCH v2 0/3] bpf: x", 2),
        ("[PATCH V3 1/3] bpf: x", 3),
        ("[PATCHv4] bpf: x", 4),
        ("[RFC PATCH bpf-next v5 2/7] bpf: x", 5),
        ("[RFC][PATCH v6] bpf: x", 6),
        ("Re: [PATCH v7 1/2] bpf: x", 7),
        ("[PATCH net-next,v8 0/2] x", 8),
        ("[PATCH dev2 1/2] x", 1),  # a tag, not a revision
        ("bpf: fix v2 of the map layout", 1),  # not a prefix
        ("[PATCH v0] x", 1),
    ],
)
def test_revision_of_a_subject(subject: str, revision: int) -> None:
    assert mail.revision(subject) == revision


PATCH_MAIL = """\
From git@z Thu Jan  1 00:00:00 1970
Subject: [PATCH v2 1/2] bpf: bigger unit
From: Ann Dev <ann@example.org>
Message-Id: <m1@example.org>

The unit was too small.

Link: https://example.org/bug
Signed-off-by: Ann Dev <ann@example.org>
Reviewed-by: Rev Iewer <rev@example.org>
Acked-by:   Someone   <s@example.org>
---
 kernel/bpf/memalloc.c | 2 +-
diff --git a/kernel/bpf/memalloc.c b/kernel/bpf/memalloc.c
Reviewed-by: not a trailer <in the diff>
"""


def test_trailers_are_the_last_paragraph_before_the_diff() -> None:
    assert mail.trailers(PATCH_MAIL) == (
        ("Link", "https://example.org/bug"),
        ("Signed-off-by", "Ann Dev <ann@example.org>"),
        ("Reviewed-by", "Rev Iewer <rev@example.org>"),
        ("Acked-by", "Someone <s@example.org>"),
    )


def test_a_last_paragraph_of_prose_has_no_trailers() -> None:
    text = PATCH_MAIL.replace("Acked-by:   Someone   <s@example.org>", "Thanks: for reading this")
    assert len(mail.trailers(text)) == 4  # "Thanks: for …" is still Token: value
    prose = PATCH_MAIL.replace("Acked-by:   Someone   <s@example.org>", "and some prose here")
    assert mail.trailers(prose) == ()


def test_trailers_show_control_characters() -> None:
    text = PATCH_MAIL.replace("Rev Iewer", "Rev\x1b]0;x\x07Iewer")
    assert ("Reviewed-by", "Rev\\x1b]0;x\\x07Iewer <rev@example.org>") in mail.trailers(text)


def test_base_commit() -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert mail.base_commit(f"cover\n\nbase-commit: {sha}\n-- \n2.39\n") == sha
    assert mail.base_commit("base-commit: not-a-sha\n") is None
    assert mail.base_commit("the base-commit: abcdef0 in prose\n") is None
    assert mail.base_commit("") is None


def test_addresses_of_a_header() -> None:
    value = 'bpf@vger.kernel.org, "Doe, Jane" <jane@x.org>, <bare@x.org>, bpf@vger.kernel.org'
    assert mail.addresses(value) == (
        "bpf@vger.kernel.org",
        '"Doe, Jane" <jane@x.org>',
        "bare@x.org",
    )
    assert mail.addresses(None) == ()
    assert mail.addresses("undisclosed-recipients:;") == ()


def test_addresses_are_bounded_and_show_control_characters() -> None:
    many = ", ".join(f"u{i}@x.org" for i in range(mail.MAX_ADDRESSES + 50))
    assert len(mail.addresses(many)) == mail.MAX_ADDRESSES
    (hostile,) = mail.addresses("Evil\u202eName <e@x.org>")
    assert "\u202e" not in hostile and "<U+202E>" in hostile


# --- the matrix's series: forms ------------------------------------------------------------


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    (tmp_path / "thread.mbox").write_text("From x\n")
    (tmp_path / "a.patch").write_text("diff\n")
    return tmp_path


def _variant(proj: Path, series: str) -> Variant:
    path = proj / "matrix.yaml"
    path.write_text(f"variants:\n  - name: v\n    series: {series}\n")
    (variant,) = config.load(path).variants
    return variant


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        ("{b4: 20230101.1234-1-a@b.c}", MailSource("20230101.1234-1-a@b.c")),
        ("{b4: '<20230101.1234-1-a@b.c>'}", MailSource("20230101.1234-1-a@b.c")),
        ("{b4: 'https://lore.kernel.org/bpf/x@y.z/'}", MailSource("x@y.z")),
        ("https://lore.kernel.org/bpf/x@y.z/", MailSource("x@y.z")),
        ("{mbox: thread.mbox}", MailSource("", Path("thread.mbox"))),
        ("{mbox: thread.mbox, message-id: x@y.z}", MailSource("x@y.z", Path("thread.mbox"))),
    ],
)
def test_series_from_the_list(proj: Path, series: str, expected: MailSource) -> None:
    variant = _variant(proj, series)
    if expected.mbox is not None:
        expected = dataclasses.replace(expected, mbox=proj / expected.mbox)
    assert variant.mail == expected
    assert variant.series == ()


def test_patch_files_still_work(proj: Path) -> None:
    variant = _variant(proj, "[a.patch]")
    assert variant.series == (proj / "a.patch",)
    assert variant.mail is None


@pytest.mark.parametrize(
    ("series", "problem"),
    [
        ("{}", "give one of b4 or mbox"),
        ("{b4: x@y.z, mbox: thread.mbox}", "give one of b4 or mbox"),
        ("{b4: x@y.z, message-id: x@y.z}", "variants[0].series.message-id: b4: names the message"),
        ("{b4: not-an-id}", "variants[0].series.b4: not a Message-ID"),
        ("{b4: 'https://example.org/x/a@b.c/'}", "not a lore URL"),
        ("{mbox: missing.mbox}", "variants[0].series.mbox: no such file or directory"),
        ("{mbox: thread.mbox, message-id: 'a b'}", "series.message-id: not a Message-ID"),
        ("{maildir: x}", "unknown key 'maildir'; allowed keys: b4, mbox, message-id"),
        ("{b4: [x@y.z]}", "variants[0].series.b4: expected a Message-ID"),
        ("['https://lore.kernel.org/bpf/x@y.z/']", "a lore URL is a series of its own"),
        ("'https://example.org/x'", "not a lore URL"),
    ],
)
def test_bad_series_forms_are_matrix_errors(proj: Path, series: str, problem: str) -> None:
    with pytest.raises(MatrixError) as caught:
        _variant(proj, series)
    assert str(caught.value).startswith(f"{proj / 'matrix.yaml'}:3: variants[0].series")
    assert problem in str(caught.value)


# --- the reports show the series, hostile text escaped ---------------------------------------

HOSTILE = dataclasses.replace(
    SERIES, subject="[PATCH v2 0/2] <script>alert(1)</script>\x1b]0;pwned\x07 \u202eevil"
)


def test_html_report_shows_the_series_escaped() -> None:
    page = html.render(_run(HOSTILE))
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\x1b" not in page and "\u202e" not in page
    assert "&lt;20230101.1234-0-a@b.c&gt;" in page  # the thread's Message-ID
    assert "(revision 2)" in page and "A Developer &lt;a@b.c&gt;" in page
    assert "&lt;20230101.1234-2-a@b.c&gt;" in page and "cd" * 6 in page  # a patch's id


def test_text_report_shows_the_series() -> None:
    text = report_text.render(_run(HOSTILE))
    assert "\x1b" not in text and "\u202e" not in text
    series = text[text.index("series") :]
    assert series.startswith("series    v: [PATCH v2 0/2] <script>")
    assert "revision 2, 2 patches, <20230101.1234-0-a@b.c>" in " ".join(series.split())
    assert "series" not in report_text.render(_run(None)).split("=" * 72)[1].split("\n\n")[0]
