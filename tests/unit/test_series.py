"""collect(): reading patch files, directories and mboxes (no git involved)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import UserError
from orchestrator.kernel.series import clean_subject, collect, is_cover_letter, split_mbox

DIFF = """\
---
 kernel/bpf/memalloc.c | 2 +-
 1 file changed, 1 insertion(+), 1 deletion(-)

diff --git a/kernel/bpf/memalloc.c b/kernel/bpf/memalloc.c
index 1111111..2222222 100644
--- a/kernel/bpf/memalloc.c
+++ b/kernel/bpf/memalloc.c
@@ -1,3 +1,3 @@
 a
-b
+c
 d
--
2.39.5

"""


def message(subject: str, *, diff: str = DIFF, sha: str = "0" * 40, body: str = "Body.") -> str:
    """A message as git format-patch writes it."""
    return (
        f"From {sha} Mon Sep 17 00:00:00 2001\n"
        "From: Dev Eloper <dev@example.org>\n"
        "Date: Tue, 5 Mar 2024 10:00:00 +0100\n"
        f"Subject: {subject}\n"
        "\n"
        f"{body}\n"
        "\n"
        "Signed-off-by: Dev Eloper <dev@example.org>\n"
        f"{diff}"
    )


COVER = message("[PATCH 0/2] bpf: the series", diff="\n-- \n2.39.5\n\n")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- subjects ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("[PATCH] bpf: fix a leak", "bpf: fix a leak"),
        ("[PATCH v2 3/7] bpf: fix a leak", "bpf: fix a leak"),
        ("[RFC PATCH bpf-next 1/6] bpf: fix a leak", "bpf: fix a leak"),
        ("[PATCH bpf] [RESEND] bpf: fix a leak", "bpf: fix a leak"),
        ("Re: [PATCH 2/2] bpf: fix a leak", "bpf: fix a leak"),
        ("bpf: keep [brackets] inside", "bpf: keep [brackets] inside"),
        ("  bpf:   squeeze   spaces ", "bpf: squeeze spaces"),
    ],
)
def test_clean_subject(raw: str, clean: str) -> None:
    assert clean_subject(raw) == clean


@pytest.mark.parametrize(
    ("subject", "cover"),
    [
        ("[PATCH 0/7] bpf: series", True),
        ("[PATCH v3 00/12] bpf: series", True),
        ("[RFC PATCH bpf-next 0/6] bpf: series", True),
        ("[PATCH bpf-next] [PATCH 0/2] odd but a cover", True),
        ("[PATCH 1/7] bpf: first", False),
        ("[PATCH 10/17] bpf: tenth", False),
        ("[PATCH] bpf: mentions 0/7 later", False),
        ("bpf: no tag", False),
    ],
)
def test_is_cover_letter(subject: str, cover: bool) -> None:
    assert is_cover_letter(subject) is cover


def test_folded_subject_is_joined(tmp_path: Path) -> None:
    folded = "[PATCH v2 3/7] bpf: a subject long enough that\n git format-patch folds it\n  twice"
    (patch,) = collect([write(tmp_path / "a.patch", message(folded))])
    assert patch.subject == "bpf: a subject long enough that git format-patch folds it twice"


def test_encoded_subject_is_decoded(tmp_path: Path) -> None:
    encoded = "=?UTF-8?q?=5BPATCH=5D=20bpf=3A=20na=C3=AFve=20fix?="
    (patch,) = collect([write(tmp_path / "a.patch", message(encoded))])
    assert patch.subject == "bpf: naïve fix"


# --- files, mboxes, directories ------------------------------------------------


def test_single_patch_file(tmp_path: Path) -> None:
    path = write(tmp_path / "0001-fix.patch", message("[PATCH] bpf: fix"))
    (patch,) = collect([path])
    assert patch.source == str(path)
    assert patch.subject == "bpf: fix"
    assert patch.text == path.read_text()


def test_mbox_is_split_into_messages(tmp_path: Path) -> None:
    text = (
        COVER
        + message("[PATCH 1/2] bpf: first", sha="a" * 40)
        + message("[PATCH 2/2] bpf: second", sha="b" * 40, body="From the docs: a body line.")
    )
    path = write(tmp_path / "series.mbox", text)
    patches = collect([path])
    assert [p.subject for p in patches] == ["bpf: first", "bpf: second"]
    assert [p.source for p in patches] == [f"{path}#2", f"{path}#3"]
    assert patches[1].text.startswith(f"From {'b' * 40} ")
    assert "From the docs: a body line." in patches[1].text
    assert "".join(split_mbox(text)) == text


def test_mboxrd_from_lines_are_unescaped() -> None:
    text = message("[PATCH] x", sha="mboxrd@z", body=">From the start\n>>From quoted")
    (only,) = split_mbox(text)
    assert "\nFrom the start\n>From quoted\n" in only


def test_mbox_replies_without_diff_are_skipped(tmp_path: Path) -> None:
    reply = message("Re: [PATCH 1/1] bpf: first", diff="\nLooks good.\n\n")
    path = write(tmp_path / "thread.mbox", message("[PATCH 1/1] bpf: first") + reply)
    (patch,) = collect([path])
    assert patch.source == f"{path}#1"


def test_directory_in_name_order_without_cover_and_other_files(tmp_path: Path) -> None:
    d = tmp_path / "series"
    write(d / "0000-cover-letter.patch", COVER)
    write(d / "0002-second.patch", message("[PATCH 2/3] bpf: second"))
    write(d / "0001-first.patch", message("[PATCH 1/3] bpf: first"))
    write(d / "0003-third.diff", message("[PATCH 3/3] bpf: third"))
    write(d / "README", "not a patch")
    write(d / "notes.txt", "not a patch either")
    (d / "sub.patch").mkdir()
    patches = collect([d])
    assert [p.subject for p in patches] == ["bpf: first", "bpf: second", "bpf: third"]
    assert patches[0].source == str(d / "0001-first.patch")


def test_paths_keep_their_order(tmp_path: Path) -> None:
    b = write(tmp_path / "b.patch", message("[PATCH] b"))
    a = write(tmp_path / "a.patch", message("[PATCH] a"))
    assert [p.subject for p in collect([b, a])] == ["b", "a"]


def test_bare_diff_takes_subject_from_file_name(tmp_path: Path) -> None:
    bare = DIFF.split("\n\n", 1)[1]  # from "diff --git" on, no headers
    (patch,) = collect([write(tmp_path / "fix-leak.diff", bare)])
    assert patch.subject == "fix-leak"
    assert patch.text == bare


def test_crlf_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "crlf.patch"
    path.write_bytes(message("[PATCH] crlf").replace("\n", "\r\n").encode())
    (patch,) = collect([path])
    assert patch.subject == "crlf"
    assert "\r\n" in patch.text


def test_quoted_printable_body_counts_as_diff(tmp_path: Path) -> None:
    text = (
        "From: Dev <dev@example.org>\n"
        "Subject: [PATCH] qp\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: quoted-printable\n\n"
        "diff=20--git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n"
    )
    (patch,) = collect([write(tmp_path / "qp.eml", text)])
    assert patch.subject == "qp"


# --- errors --------------------------------------------------------------------


def test_file_without_diff_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "notes.patch", message("[PATCH] words only", diff="\n"))
    with pytest.raises(UserError, match=r"notes\.patch"):
        collect([path])


def test_explicit_cover_letter_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "0000-cover-letter.patch", COVER)
    with pytest.raises(UserError, match=r"0000-cover-letter\.patch"):
        collect([path])


def test_directory_file_without_diff_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "d" / "0001-ok.patch", message("[PATCH] ok"))
    write(tmp_path / "d" / "0002-empty.patch", "")
    with pytest.raises(UserError, match=r"0002-empty\.patch"):
        collect([tmp_path / "d"])


def test_missing_path_and_empty_directory_are_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nope"):
        collect([tmp_path / "nope.patch"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty"):
        collect([tmp_path / "empty"])


def test_non_utf8_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.patch"
    path.write_bytes(message("[PATCH] caf\xe9").encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1\.patch: not UTF-8"):
        collect([path])
