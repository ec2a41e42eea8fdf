"""A series from the list: the real b4, offline, on threads written for the test.

The thread holds v1 and v2 of a two-patch series with cover letters (v2's
cover a reply to v1's, as `git send-email --in-reply-to` sends it) and a
review of v2's first patch carrying a Reviewed-by.  b4 must pick v2, add the
trailer, order the patches and find the cover letter; the patches then
apply to the fake kernel tree (tests/fakelinux) for real, and a whole run
records the series in results.json.  Bad threads fail their variant's APPLY
stage with the reason while the other variants go on.
"""

from __future__ import annotations

import email.utils
import shutil
import socket
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator import cli, results
from orchestrator.git import git
from orchestrator.kernel import mail
from orchestrator.kernel.series import apply as apply_series
from orchestrator.matrix import MailSource
from orchestrator.proc import run
from orchestrator.results import PatchOutcome, Stage, Status

pytestmark = pytest.mark.integration
FAKELINUX = Path(__file__).parent.parent / "fakelinux"

AUTHOR = "Ann Dev <ann@example.org>"
REVIEWER = "Rev Iewer <rev@example.org>"
LIST = "bpf@vger.kernel.org"
BASE = "0123456789abcdef0123456789abcdef01234567"


# --- writing a thread -------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    message_id: str
    subject: str
    body: str
    sender: str = AUTHOR
    parents: tuple[str, ...] = ()  # References, oldest first; the last is In-Reply-To
    minute: int = 0

    def text(self) -> str:
        headers = [
            "From mboxrd@z Thu Jan  1 00:00:00 1970",
            f"From: {self.sender}",
            f"To: {LIST}",
            f"Cc: {REVIEWER}, Other Person <other@example.org>",
            f"Subject: {self.subject}",
            f"Date: {email.utils.formatdate(1700000000 + 60 * self.minute)}",
            f"Message-ID: <{self.message_id}>",
        ]
        if self.parents:
            headers.append(f"In-Reply-To: <{self.parents[-1]}>")
            headers.append("References: " + " ".join(f"<{p}>" for p in self.parents))
        headers += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8"]
        return "\n".join(headers) + "\n\n" + self.body.rstrip("\n") + "\n"


def one_line_diff(path: str, context: Sequence[str], line: int, old: str, new: str) -> str:
    """A git diff changing line `line` (1-based) of a file whose first lines are `context`."""
    lines = list(context)
    assert lines[line - 1] == old, (lines[line - 1], old)
    hunk = [f" {x}" for x in lines]
    hunk[line - 1 : line] = [f"-{old}", f"+{new}"]
    n = len(lines)
    return (
        f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n"
        f"@@ -1,{n} +1,{n} @@\n" + "\n".join(hunk) + "\n"
    )


def patch_body(message: str, diff: str, trailers: Sequence[str] = ()) -> str:
    tags = "\n".join([f"Signed-off-by: {AUTHOR}", *trailers])
    return f"{message}\n\n{tags}\n---\n{diff}-- \n2.39.2\n"


def cover_body(version: int, subjects: Sequence[str], base: str = BASE) -> str:
    shortlog = "\n".join(f"  {s}" for s in subjects)
    return (
        f"Version {version} of the series.\n\nAnn Dev ({len(subjects)}):\n{shortlog}\n\n"
        f" kernel/bpf/memalloc.c | 4 ++--\n 1 file changed, 2 insertions(+), 2 deletions(-)\n\n"
        f"\nbase-commit: {base}\n-- \n2.39.2\n"
    )


def series_thread(
    prefix: str,
    diffs: Mapping[int, Sequence[tuple[str, str]]],
    *,
    base: str = BASE,
    review: int | None = 2,
) -> list[Mail]:
    """v1, v2, … of a series (diffs: version -> (subject, diff) per patch); each cover
    replies to the previous one; `review` gets a Reviewed-by for its first patch."""
    mails: list[Mail] = []
    previous: tuple[str, ...] = ()
    for version, patches in sorted(diffs.items()):
        tag = "PATCH" if version == 1 else f"PATCH v{version}"
        n = len(patches)
        cover_id = f"{prefix}.v{version}-0-ann@example.org"
        subjects = [s for s, _ in patches]
        mails.append(
            Mail(
                cover_id,
                f"[{tag} 0/{n}] bpf: two tweaks",
                cover_body(version, subjects, base),
                parents=previous,
                minute=100 * version,
            )
        )
        thread = (*previous, cover_id)
        for i, (subject, diff) in enumerate(patches, start=1):
            mails.append(
                Mail(
                    f"{prefix}.v{version}-{i}-ann@example.org",
                    f"[{tag} {i}/{n}] {subject}",
                    patch_body(f"{subject} (v{version}).", diff),
                    parents=thread,
                    minute=100 * version + i,
                )
            )
        if version == review:
            first = f"{prefix}.v{version}-1-ann@example.org"
            mails.append(
                Mail(
                    f"review.v{version}@example.org",
                    f"Re: [{tag} 1/{n}] {subjects[0]}",
                    f"On Tue, Ann Dev wrote:\n> {subjects[0]}\n\nLooks good.\n\n"
                    f"Reviewed-by: {REVIEWER}\n",
                    sender=REVIEWER,
                    parents=(*thread, first),
                    minute=100 * version + 50,
                )
            )
        previous = (cover_id,)
    return mails


def write_mbox(path: Path, mails: Sequence[Mail]) -> Path:
    path.write_text("\n".join(m.text() for m in mails))
    return path


MEMALLOC = ["/* fake memalloc */", "static int unit_size = 8;", "", "int bpf_mem_alloc(void)", "{"]


def fake_series(size_v1: int = 64, size_v2: int = 32) -> dict[int, Sequence[tuple[str, str]]]:
    """Two patches to the fake tree's memalloc.c; v1 and v2 differ in the second."""
    path = "kernel/bpf/memalloc.c"
    first = one_line_diff(
        path, MEMALLOC, 2, "static int unit_size = 8;", "static int unit_size = 16;"
    )
    bigger = ["/* fake memalloc */", "static int unit_size = 16;", *MEMALLOC[2:]]
    old = "static int unit_size = 16;"
    return {
        version: [
            ("bpf: bigger unit", first),
            (
                "bpf: even bigger",
                one_line_diff(path, bigger, 2, old, f"static int unit_size = {size};"),
            ),
        ]
        for version, size in ((1, size_v1), (2, size_v2))
    }


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """The fake kernel tree as a git repository (master: the base commit)."""
    path = tmp_path / "linux"
    shutil.copytree(FAKELINUX, path)
    git(path, "init", "-q", "-b", "master")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "fake linux")
    return path


@pytest.fixture()
def thread(tmp_path: Path) -> Path:
    return write_mbox(tmp_path / "thread.mbox", series_thread("20231114", fake_series()))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- b4 on its own ------------------------------------------------------------------------


def test_b4_picks_v2_orders_it_adds_the_trailer_and_records_the_series(
    tmp_path: Path, tree: Path, thread: Path
) -> None:
    # Any message of the thread names it: here v1's first patch.
    source = MailSource("20231114.v1-1-ann@example.org", thread)
    got = mail.fetch(source, tmp_path / "work", tmp_path / "b4home")

    s = got.series
    assert s.message_id == "20231114.v2-0-ann@example.org"  # v2's cover letter
    assert s.subject == "[PATCH v2 0/2] bpf: two tweaks"
    assert s.revision == 2
    assert s.author == AUTHOR
    assert s.base_commit == BASE
    assert s.to == (LIST,)
    assert s.cc == (REVIEWER, "Other Person <other@example.org>")
    assert [p.message_id for p in s.patches] == [
        "20231114.v2-1-ann@example.org",
        "20231114.v2-2-ann@example.org",
    ]
    assert [p.subject for p in s.patches] == [
        "[PATCH v2 1/2] bpf: bigger unit",
        "[PATCH v2 2/2] bpf: even bigger",
    ]
    # The patch-id is git's, of the diff as sent (trailers do not change it).
    sent = thread.read_text().split("From mboxrd@z")
    for record in s.patches:
        (original,) = [m for m in sent if f"Message-ID: <{record.message_id}>" in m]
        expected = run(["git", "patch-id", "--stable"], timeout=30, stdin=original).check()
        assert record.patch_id == expected.stdout.split()[0]
    assert len({p.patch_id for p in s.patches}) == 2

    assert [p.subject for p in got.patches] == ["bpf: bigger unit", "bpf: even bigger"]
    assert f"Reviewed-by: {REVIEWER}" in got.patches[0].text
    assert "Reviewed-by" not in got.patches[1].text
    # No network here: b4's look-up of more trailers failed, and the log says so.
    failed = "Request to https://lore.kernel.org failed" in got.log
    assert failed == ("could not reach https://lore.kernel.org" in got.log)
    assert "Will use the latest revision: v2" in got.log
    # Nothing written to the user's home: b4 kept to the directory it was given.
    assert (tmp_path / "b4home").is_dir()

    applied = apply_series(tree, "master", "mail", got.patches)
    assert [p.outcome for p in applied.patches] == [PatchOutcome.APPLIED] * 2
    assert "unit_size = 32;" in git(tree, "show", "mail:kernel/bpf/memalloc.c").stdout
    first = git(tree, "log", "-1", "--format=%B", "mail~1").stdout
    assert f"Reviewed-by: {REVIEWER}" in first and first.startswith("bpf: bigger unit")


def test_the_first_thread_of_an_mbox_needs_no_message_id(tmp_path: Path, thread: Path) -> None:
    got = mail.fetch(MailSource("", thread), tmp_path / "work", tmp_path / "b4home")
    assert got.series.revision == 2
    assert len(got.patches) == 2


def test_a_maildir_is_read_like_an_mbox(tmp_path: Path) -> None:
    maildir = tmp_path / "maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for i, m in enumerate(series_thread("md", fake_series())):
        text = m.text().split("\n", 1)[1]  # no mbox "From " line in a maildir
        (maildir / "cur" / f"{i}.host:2,S").write_text(text)
    got = mail.fetch(MailSource("md.v1-0-ann@example.org", maildir), tmp_path / "w", tmp_path / "h")
    assert got.series.message_id == "md.v2-0-ann@example.org"


def test_no_cover_letter_names_the_series_by_its_first_patch(tmp_path: Path) -> None:
    mails = [m for m in series_thread("nc", {1: fake_series()[1]}) if "-0-" not in m.message_id]
    path = write_mbox(tmp_path / "t.mbox", mails)
    got = mail.fetch(MailSource("nc.v1-2-ann@example.org", path), tmp_path / "w", tmp_path / "h")
    assert got.series.message_id == "nc.v1-1-ann@example.org"
    assert got.series.subject == "[PATCH 1/2] bpf: bigger unit"
    assert got.series.revision == 1
    assert got.series.base_commit is None


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unknown-id", "no message <nobody@example.org> in it"),
        ("no-patches", "the thread has no patches"),
        ("broken", "not an mbox (no mail with a Message-ID in it)"),
        ("empty", "not an mbox"),
    ],
)
def test_a_bad_thread_is_a_clear_reason(tmp_path: Path, case: str, reason: str) -> None:
    path = tmp_path / "thread.mbox"
    msgid = "nobody@example.org" if case == "unknown-id" else ""
    if case in ("unknown-id",):
        write_mbox(path, series_thread("x", fake_series()))
    elif case == "no-patches":
        mails = series_thread("x", fake_series())
        write_mbox(path, [m for m in mails if "diff --git" not in m.body])
    elif case == "broken":
        path.write_bytes(b"\x00\xffgarbage\nnot: a mail\n" * 50)
    else:
        path.write_text("")
    with pytest.raises(mail.MailError) as caught:
        mail.fetch(MailSource(msgid, path), tmp_path / "w", tmp_path / "h")
    assert reason in caught.value.reason
    assert str(path) in caught.value.reason


def test_a_thread_of_replies_only_is_no_series(tmp_path: Path) -> None:
    # The mbox has patches, but the named thread (a separate discussion) has none.
    mails = series_thread("x", fake_series())
    lone = Mail("lone@example.org", "bpf: a question", "Why?\n", sender=REVIEWER, minute=999)
    path = write_mbox(tmp_path / "t.mbox", [*mails, lone])
    with pytest.raises(mail.MailError, match="b4 found no patches in the thread of <lone@"):
        mail.fetch(MailSource("lone@example.org", path), tmp_path / "w", tmp_path / "h")


def test_no_network_for_a_b4_series_is_a_clear_reason(tmp_path: Path) -> None:
    lore = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(mail.MailError) as caught:
        mail.fetch(MailSource("x@example.org"), tmp_path / "w", tmp_path / "h", lore=lore)
    assert caught.value.reason.startswith(f"cannot fetch <x@example.org> from {lore} with b4")
    assert "no network?" in caught.value.reason
    assert "b4 --no-stdin" in caught.value.log


# --- a whole run ---------------------------------------------------------------------------


def test_a_run_takes_series_from_threads_and_bad_ones_fail_alone(
    tmp_path: Path, tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    write_mbox(proj / "thread.mbox", series_thread("20231114", fake_series()))
    write_mbox(proj / "noise.mbox", [Mail("chat@example.org", "hello", "no patch\n")])
    (proj / "kconfigs").mkdir()
    (proj / "kconfigs" / "base.config").write_text("CONFIG_BPF=y\n")
    (proj / "matrix.yaml").write_text(
        textwrap.dedent(f"""\
        name: fake
        tree: {{path: {tree}}}
        kconfig: {{fragments: [kconfigs/base.config]}}
        variants:
          - name: base
          - name: from-list
            series: {{mbox: thread.mbox, message-id: 20231114.v1-0-ann@example.org}}
          - name: unknown
            series: {{mbox: thread.mbox, message-id: "<nobody@example.org>"}}
          - name: no-patches
            series: {{mbox: noise.mbox}}
          - name: lore               # no network in tests (with one: no such thread)
            series: https://lore.kernel.org/bpf/nobody.orchestrate@example.org/
        """)
    )
    matrix = str(proj / "matrix.yaml")
    cache = tmp_path / "cache"
    # Planning needs neither b4 nor the network, and says where the series comes from.
    assert cli.main(["plan", matrix, "--cache-dir", str(cache)]) == 0
    assert "thread <20231114.v1-0-ann@example.org> (b4)" in capsys.readouterr().out
    out = tmp_path / "run"
    args = ["run", matrix, "--cache-dir", str(cache), "--out", str(out), "--until", "build"]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    run_ = results.read(out / "results.json")
    by = {v.name: v for v in run_.variants}

    good = by["from-list"]
    assert [s.status for s in good.stages] == [Status.PASS] * 3
    assert good.mail is not None and good.mail.revision == 2
    assert good.mail.message_id == "20231114.v2-0-ann@example.org"
    assert [p.outcome for p in good.patches] == [PatchOutcome.APPLIED] * 2
    assert good.head != good.base == by["base"].head
    assert good.build is not None and good.build.tree != by["base"].build.tree  # type: ignore[union-attr]
    log = Path(good.stages[0].logs[0]).read_text()
    assert "could not reach https://lore.kernel.org" in log  # no network in tests
    assert "Reviewed-by: Rev Iewer <rev@example.org>" in log
    assert by["base"].mail is None

    for name, reason in (("unknown", "no message <nobody@example.org>"),
                         ("no-patches", "the thread has no patches"),
                         ("lore", "<nobody.orchestrate@example.org>")):  # fmt: skip
        v = by[name]
        apply = v.stage(Stage.APPLY)
        assert apply is not None and apply.status is Status.FAIL, name
        assert reason in apply.reason
        assert v.mail is None
        assert [s.status for s in v.stages[1:]] == [Status.SKIPPED] * 2
