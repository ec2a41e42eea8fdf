"""apply(): real git on a small generated kernel-like repository."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.errors import InfraError, UserError
from orchestrator.git import git
from orchestrator.kernel.series import Applied, collect
from orchestrator.kernel.series import apply as apply_series
from orchestrator.matrix import Revert
from orchestrator.results import PatchOutcome

pytestmark = pytest.mark.integration

APPLIED = PatchOutcome.APPLIED
ALREADY = PatchOutcome.ALREADY_APPLIED
CONFLICT = PatchOutcome.CONFLICT
NOT_ATTEMPTED = PatchOutcome.NOT_ATTEMPTED

MEMALLOC = "kernel/bpf/memalloc.c"
HASHTAB = "kernel/bpf/hashtab.c"
MAKEFILE = "Makefile"
# Test commits get fixed dates so that patches made from them are stable.
COMMIT_ENV = {"GIT_AUTHOR_DATE": "@1700000000 +0100", "GIT_COMMITTER_DATE": "@1700000000 +0100"}


def c_file(name: str, functions: int = 8) -> str:
    lines = ["// SPDX-License-Identifier: GPL-2.0-only", f"/* {name}: generated */", ""]
    for i in range(functions):
        lines += [f"static int {name}_{i}(void)", "{", f"\treturn {i};", "}", ""]
    return "\n".join(lines)


def makefile() -> str:
    return "".join(f"obj-$(CONFIG_BPF_{i}) += part{i}.o\n" for i in range(20))


@dataclass
class KernelRepo:
    """The source repository; patches are made on scratch branches in it."""

    path: Path
    scratch: int = 0

    def commit(self, message: str, edits: dict[str, Callable[[str], str]]) -> str:
        for name, edit in edits.items():
            file = self.path / name
            file.write_text(edit(file.read_text()))
        git(self.path, "commit", "-q", "-a", "-m", message, env=COMMIT_ENV)
        return self.sha("HEAD")

    def sha(self, rev: str) -> str:
        return git(self.path, "rev-parse", rev).stdout.strip()

    def patches(
        self, changes: list[tuple[str, dict[str, Callable[[str], str]]]], start: str = "master"
    ) -> tuple[list[Path], list[str]]:
        """format-patch files for `changes` made on a scratch branch off `start`."""
        self.scratch += 1
        branch = f"scratch{self.scratch}"
        git(self.path, "checkout", "-q", "-b", branch, start)
        commits = [self.commit(message, edits) for message, edits in changes]
        out = self.path.parent / f"patches{self.scratch}"
        git(self.path, "format-patch", "-q", "-o", out, f"{start}..{branch}", env=COMMIT_ENV)
        git(self.path, "checkout", "-q", "master")
        return sorted(out.iterdir()), commits


def replace(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return edit


@pytest.fixture
def kernel(tmp_path: Path) -> KernelRepo:
    path = tmp_path / "linux"
    (path / "kernel/bpf").mkdir(parents=True)
    (path / MEMALLOC).write_text(c_file("memalloc"))
    (path / HASHTAB).write_text(c_file("htab"))
    (path / MAKEFILE).write_text(makefile())
    git(path, "init", "-q", "-b", "master")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "Linux 6.99", env=COMMIT_ENV)
    return KernelRepo(path)


@pytest.fixture
def worktree(kernel: KernelRepo, tmp_path: Path) -> Path:
    """The dedicated work tree apply() runs in, as the tool sets it up."""
    path = tmp_path / "apply"
    git(kernel.path, "worktree", "add", "-q", "--detach", path, "master")
    return path


def outcomes(applied: Applied) -> list[PatchOutcome]:
    return [p.outcome for p in applied.patches]


def assert_clean(repo: Path) -> None:
    assert git(repo, "status", "--porcelain").stdout == ""
    assert not Path(
        repo, git(repo, "rev-parse", "--git-path", "rebase-apply").stdout.strip()
    ).exists()


TWO_PATCHES = [
    ("bpf: memalloc returns more", {MEMALLOC: replace("\treturn 2;", "\treturn 20;")}),
    ("bpf: htab returns more", {HASHTAB: replace("\treturn 5;", "\treturn 50;")}),
]


# --- applying ------------------------------------------------------------------


def test_clean_series_applies_reproducibly(kernel: KernelRepo, worktree: Path) -> None:
    paths, _ = kernel.patches(TWO_PATCHES)
    series = collect(paths)
    applied = apply_series(worktree, "master", "variant-a", series)
    assert applied.ok
    assert outcomes(applied) == [APPLIED, APPLIED]
    assert applied.base == kernel.sha("master")
    assert applied.head is not None and applied.head != applied.base
    assert applied.head == applied.patches[-1].commit
    assert [p.subject for p in applied.patches] == [
        "bpf: memalloc returns more",
        "bpf: htab returns more",
    ]
    assert [p.source for p in applied.patches] == [str(p) for p in paths]
    assert "\treturn 20;" in (worktree / MEMALLOC).read_text()
    assert git(worktree, "rev-parse", "--abbrev-ref", "HEAD").stdout.strip() == "variant-a"
    dates = git(worktree, "log", "-1", "--format=%at %ct", "HEAD").stdout.split()
    assert dates == ["1700000000", "946684800"]  # author date kept, committer date fixed
    again = apply_series(worktree, "master", "variant-a", series)
    assert again == applied
    other = apply_series(worktree, kernel.sha("master"), "variant-b", series)
    assert other.head == applied.head
    assert_clean(worktree)


def test_empty_series_gives_the_base(kernel: KernelRepo, worktree: Path) -> None:
    applied = apply_series(worktree, "master", "baseline", ())
    assert applied.ok and applied.patches == ()
    assert applied.head == applied.base == kernel.sha("master")


def test_conflict_stops_the_series_and_leaves_repo_usable(
    kernel: KernelRepo, worktree: Path
) -> None:
    paths, _ = kernel.patches(TWO_PATCHES)
    kernel.commit("bpf: memalloc returns less", {MEMALLOC: replace("\treturn 2;", "\treturn -2;")})
    applied = apply_series(worktree, "master", "variant-a", collect(paths))
    assert not applied.ok
    assert applied.head is None
    assert outcomes(applied) == [CONFLICT, NOT_ATTEMPTED]
    assert applied.patches[0].files == (MEMALLOC,)
    assert "memalloc.c" in applied.patches[0].output
    assert (
        "CONFLICT (content): Merge conflict in kernel/bpf/memalloc.c" in applied.patches[0].output
    )
    assert "hint:" not in applied.patches[0].output
    assert "git am --continue" not in applied.patches[0].output
    assert applied.patches[1].commit is None
    assert_clean(worktree)
    assert git(worktree, "rev-parse", "HEAD").stdout.strip() == kernel.sha("master")
    # The same work tree goes on to the next variant.
    later = apply_series(worktree, "master", "variant-b", collect(paths[1:]))
    assert later.ok and outcomes(later) == [APPLIED]
    assert_clean(worktree)


def test_conflict_without_three_way_names_the_rejected_file(tmp_path: Path, worktree: Path) -> None:
    # Made elsewhere: its blob ids are unknown here, so am cannot merge.  The
    # Makefile part would apply; only hashtab.c is in the way.
    foreign = (
        "From: Dev <dev@example.org>\nDate: Tue, 5 Mar 2024 10:00:00 +0100\n"
        "Subject: [PATCH] bpf: foreign\n\n---\n"
        f"diff --git a/{MAKEFILE} b/{MAKEFILE}\nindex 7654321..abcdef0 100644\n"
        f"--- a/{MAKEFILE}\n+++ b/{MAKEFILE}\n@@ -1,2 +1,2 @@\n"
        "-obj-$(CONFIG_BPF_0) += part0.o\n+obj-y += part0.o\n obj-$(CONFIG_BPF_1) += part1.o\n"
        f"diff --git a/{HASHTAB} b/{HASHTAB}\nindex 1234567..89abcde 100644\n"
        f"--- a/{HASHTAB}\n+++ b/{HASHTAB}\n@@ -1,2 +1,2 @@\n"
        " // SPDX-License-Identifier: GPL-2.0-only\n-/* not what is there */\n+/* new */\n"
    )
    path = tmp_path / "foreign.patch"
    path.write_text(foreign)
    applied = apply_series(worktree, "master", "variant-a", collect([path]))
    assert outcomes(applied) == [CONFLICT]
    assert applied.patches[0].files == (HASHTAB,)
    assert "sha1 information is lacking" in applied.patches[0].output
    assert_clean(worktree)


def test_change_already_in_base(kernel: KernelRepo, worktree: Path) -> None:
    paths, commits = kernel.patches(TWO_PATCHES)
    applied = apply_series(worktree, commits[0], "variant-a", collect(paths))
    assert applied.ok
    assert outcomes(applied) == [ALREADY, APPLIED]
    assert applied.patches[0].commit is None
    assert git(worktree, "rev-list", "--count", f"{commits[0]}..HEAD").stdout.strip() == "1"


def test_change_already_in_base_with_other_context(kernel: KernelRepo, worktree: Path) -> None:
    # Neither direction applies (context changed), but the 3-way merge is a no-op.
    paths, _ = kernel.patches(TWO_PATCHES[:1])
    kernel.commit(
        "bpf: same fix, reworded",
        {
            MEMALLOC: replace(
                "static int memalloc_2(void)\n{\n\treturn 2;",
                "static long memalloc_2(void)\n{\n\treturn 20;",
            )
        },
    )
    applied = apply_series(worktree, "master", "variant-a", collect(paths))
    assert outcomes(applied) == [ALREADY]
    assert applied.head == kernel.sha("master")
    assert_clean(worktree)


def test_mbox_with_two_messages(kernel: KernelRepo, worktree: Path, tmp_path: Path) -> None:
    paths, _ = kernel.patches(TWO_PATCHES)
    mbox = tmp_path / "series.mbox"
    mbox.write_text("".join(p.read_text() for p in paths))
    series = collect([mbox])
    assert [p.source for p in series] == [f"{mbox}#1", f"{mbox}#2"]
    applied = apply_series(worktree, "master", "variant-a", series)
    assert outcomes(applied) == [APPLIED, APPLIED]
    assert applied.head == apply_series(worktree, "master", "b", collect(paths)).head


def test_unchanged_files_keep_their_mtime(kernel: KernelRepo, worktree: Path) -> None:
    a, _ = kernel.patches(TWO_PATCHES[:1])
    b, _ = kernel.patches([("kbuild: one more", {MAKEFILE: replace("part3.o", "part3.o extra.o")})])
    assert apply_series(worktree, "master", "variant-a", collect(a)).ok
    untouched = (worktree / HASHTAB).stat().st_mtime_ns
    switched = (worktree / MEMALLOC).stat().st_mtime_ns
    time.sleep(0.05)  # so that a rewrite would show in the mtime
    assert apply_series(worktree, "master", "variant-b", collect(b)).ok
    assert (worktree / HASHTAB).stat().st_mtime_ns == untouched
    assert (worktree / MEMALLOC).stat().st_mtime_ns != switched  # the control: it was rewritten


def test_leftover_am_session_is_cleared(kernel: KernelRepo, worktree: Path) -> None:
    paths, _ = kernel.patches(TWO_PATCHES[:1])
    kernel.commit("bpf: memalloc returns less", {MEMALLOC: replace("\treturn 2;", "\treturn -2;")})
    git(worktree, "checkout", "-q", "--detach", "master")
    crashed = git(worktree, "am", "--3way", paths[0], check=False)  # as if the tool was killed
    assert not crashed.ok
    applied = apply_series(worktree, "master~1", "variant-a", collect(paths))
    assert outcomes(applied) == [APPLIED]
    assert_clean(worktree)


def test_bare_diff_applies_reproducibly(kernel: KernelRepo, worktree: Path, tmp_path: Path) -> None:
    paths, _ = kernel.patches(TWO_PATCHES[:1])
    text = paths[0].read_text()
    bare = tmp_path / "fix.diff"
    bare.write_text(text[text.index("diff --git") :])
    first = apply_series(worktree, "master", "variant-a", collect([bare]))
    assert outcomes(first) == [APPLIED]
    assert git(worktree, "log", "-1", "--format=%s|%at").stdout.strip() == "fix|946684800"
    assert apply_series(worktree, "master", "variant-b", collect([bare])).head == first.head


# --- reverts -------------------------------------------------------------------

SLOWER = ("bpf: htab gets slower", {HASHTAB: replace("\treturn 3;", "\treturn 3000;")})


def test_revert_by_commit(kernel: KernelRepo, worktree: Path) -> None:
    slower = kernel.commit(*SLOWER)
    paths, _ = kernel.patches(TWO_PATCHES[:1])
    applied = apply_series(worktree, "master", "variant-a", collect(paths), [Revert(commit=slower)])
    assert outcomes(applied) == [APPLIED, APPLIED]
    revert = applied.patches[0]
    assert revert.revert and not applied.patches[1].revert
    assert revert.source == f"commit:{slower}"
    assert revert.subject == "bpf: htab gets slower"
    assert (worktree / HASHTAB).read_text() == c_file("htab")
    message = git(worktree, "log", "-1", "--format=%B", revert.commit or "").stdout
    assert message.startswith('Revert "bpf: htab gets slower"')
    assert f"This reverts commit {slower}." in message
    again = apply_series(worktree, "master", "variant-b", collect(paths), [Revert(commit=slower)])
    assert again.head == applied.head  # fixed author and committer dates


def test_revert_by_patch(kernel: KernelRepo, worktree: Path) -> None:
    (slower,), _ = kernel.patches([SLOWER])
    git(kernel.path, "am", "-q", slower, env=COMMIT_ENV)
    applied = apply_series(worktree, "master", "variant-a", (), [Revert(patch=slower)])
    assert outcomes(applied) == [APPLIED]
    result = applied.patches[0]
    assert result.revert and result.source == str(slower)
    assert (worktree / HASHTAB).read_text() == c_file("htab")
    message = git(worktree, "log", "-1", "--format=%B").stdout
    assert message == f'Revert "bpf: htab gets slower"\n\nThis reverts the patch {slower}.\n\n'
    again = apply_series(worktree, "master", "variant-b", (), [Revert(patch=slower)])
    assert again.head == applied.head
    assert_clean(worktree)


def test_revert_conflict_stops_everything(kernel: KernelRepo, worktree: Path) -> None:
    slower = kernel.commit(*SLOWER)
    (patch_file,), _ = kernel.patches([SLOWER], start="master~1")
    kernel.commit("bpf: htab even slower", {HASHTAB: replace("\treturn 3000;", "\treturn 9000;")})
    paths, _ = kernel.patches(TWO_PATCHES[:1])
    reverts = [Revert(commit=slower), Revert(patch=patch_file)]
    applied = apply_series(worktree, "master", "variant-a", collect(paths), reverts)
    assert outcomes(applied) == [CONFLICT, NOT_ATTEMPTED, NOT_ATTEMPTED]
    assert [p.revert for p in applied.patches] == [True, True, False]
    assert applied.patches[0].files == (HASHTAB,)
    assert applied.head is None
    assert_clean(worktree)
    by_patch = apply_series(worktree, "master", "variant-b", (), reverts[1:])
    assert outcomes(by_patch) == [CONFLICT]
    assert by_patch.patches[0].files == (HASHTAB,)
    assert_clean(worktree)


def test_revert_of_change_already_undone(kernel: KernelRepo, worktree: Path) -> None:
    slower = kernel.commit(*SLOWER)
    kernel.commit("bpf: htab fast again", {HASHTAB: replace("\treturn 3000;", "\treturn 3;")})
    applied = apply_series(worktree, "master", "variant-a", (), [Revert(commit=slower)])
    assert outcomes(applied) == [ALREADY]
    assert applied.head == kernel.sha("master")
    assert_clean(worktree)


def test_revert_of_unknown_commit_is_a_result(worktree: Path) -> None:
    applied = apply_series(worktree, "master", "variant-a", (), [Revert(commit="deadbeef")])
    assert outcomes(applied) == [CONFLICT]
    assert "deadbeef" in applied.patches[0].output


# --- tool faults -----------------------------------------------------------------


def test_unknown_base_and_missing_repo_raise(worktree: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"v9\.9"):
        apply_series(worktree, "v9.9", "variant-a", ())
    with pytest.raises(InfraError, match="nowhere"):
        apply_series(tmp_path / "nowhere", "master", "variant-a", ())


def test_repo_hooks_do_not_run(kernel: KernelRepo, worktree: Path) -> None:
    hook = kernel.path / ".git/hooks/applypatch-msg"
    hook.write_text("#!/bin/sh\nexit 1\n")
    os.chmod(hook, 0o755)
    paths, _ = kernel.patches(TWO_PATCHES[:1])
    assert apply_series(worktree, "master", "variant-a", collect(paths)).ok
