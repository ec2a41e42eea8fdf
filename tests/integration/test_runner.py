"""The whole apply → kconfig → build pipeline on a fake kernel tree.

tests/fakelinux is a tiny tree whose Makefile has kbuild's targets and O=
semantics and logs every compiled file, so these tests check real git, real
make incrementality and the CLI's exit codes in seconds.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from orchestrator import cli, results
from orchestrator.git import git
from orchestrator.results import PatchOutcome, Stage, Status

pytestmark = pytest.mark.integration
FAKELINUX = Path(__file__).parent.parent / "fakelinux"


def _commit_patch(repo: Path, out: Path, path: str, old: str, new: str, subject: str) -> Path:
    """Make one format-patch file changing old→new in path, then reset."""
    file = repo / path
    file.write_text(file.read_text().replace(old, new))
    git(repo, "commit", "-q", "-a", "-m", subject)
    out.mkdir(parents=True, exist_ok=True)
    made = git(repo, "format-patch", "-q", "-1", "-o", out, "HEAD").stdout.split()
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    return Path(made[0]) if made else next(out.glob("*.patch"))


def _round_trip(repo: Path, out: Path) -> None:
    """Two patches, the second undoing the first."""
    file = repo / "kernel/bpf/memalloc.c"
    original = file.read_text()
    file.write_text(original.replace("= 8", "= 32"))
    git(repo, "commit", "-q", "-a", "-m", "bpf: try 32")
    file.write_text(original)
    git(repo, "commit", "-q", "-a", "-m", "bpf: back to 8")
    git(repo, "format-patch", "-q", "-2", "-o", out, "HEAD")
    git(repo, "reset", "-q", "--hard", "HEAD~2")


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A matrix directory with a fake tree, patches and fragments."""
    tree = tmp_path / "linux"
    shutil.copytree(FAKELINUX, tree)
    git(tree, "init", "-q", "-b", "master")
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "fake linux")
    proj = tmp_path / "proj"
    p = proj / "patches"
    _commit_patch(tree, p / "tweak", "kernel/bpf/memalloc.c", "= 8", "= 16", "bpf: bigger unit")
    _round_trip(tree, p / "round-trip")
    _commit_patch(tree, p / "conflict", "kernel/fork.c", "return 0", "return 1", "fork: one")
    conflict = next((p / "conflict").glob("*.patch"))
    conflict.write_text(conflict.read_text().replace("-\treturn 0;", "-\treturn 7;"))
    _commit_patch(tree, p / "broken", "kernel/bpf/hashtab.c", "= 16", "= BUILD_ERROR", "break")
    kconfigs = proj / "kconfigs"
    kconfigs.mkdir()
    (kconfigs / "base.config").write_text("CONFIG_BPF=y\n")
    (kconfigs / "needs-dep.config").write_text("CONFIG_NEEDS_DEP=y\n")
    (proj / "matrix.yaml").write_text(
        textwrap.dedent(f"""\
        name: fake
        tree: {{path: {tree}}}
        kconfig: {{fragments: [kconfigs/base.config]}}
        variants:
          - name: base
          - name: tweak
            series: patches/tweak
          - name: same-as-base          # a change and its undoing: the base tree again
            series: patches/round-trip
          - name: conflict
            series: patches/conflict
          - name: broken
            series: patches/broken
          - name: kconfig-miss
            kconfig: kconfigs/needs-dep.config
        """)
    )
    return proj


def _run(proj: Path, tmp: Path, out: str) -> tuple[int, results.RunResult]:
    code = cli.main(
        [
            "run",
            str(proj / "matrix.yaml"),
            "--cache-dir",
            str(tmp / "cache"),
            "--out",
            str(tmp / out),
            # The fake tree's "kernel" cannot boot: the real guest is tested in e2e.
            "--until",
            "build",
        ]
    )
    return code, results.read(tmp / out / "results.json")


def _compiled(cache: Path) -> list[str]:
    logs = sorted(cache.glob("work/build/*/out/compiled.log"))
    return [line for log in logs for line in log.read_text().split()]


def test_variants_share_builds_and_failures_stay_local(project: Path, tmp_path: Path) -> None:
    code, run = _run(project, tmp_path, "run1")
    assert code == 1  # some variants failed, the others went on
    by = {v.name: v for v in run.variants}
    status = {n: [(s.stage, s.status) for s in v.stages] for n, v in by.items()}
    ok = [(Stage.APPLY, Status.PASS), (Stage.KCONFIG, Status.PASS), (Stage.BUILD, Status.PASS)]
    assert status["base"] == status["tweak"] == status["same-as-base"] == ok

    conflict = by["conflict"]
    assert conflict.patches[0].outcome is PatchOutcome.CONFLICT
    assert conflict.patches[0].files == ("kernel/fork.c",)
    assert [s.status for s in conflict.stages] == [Status.FAIL] + [Status.SKIPPED] * 2
    assert "apply failed" in conflict.stages[-1].reason

    broken = by["broken"].stage(Stage.BUILD)
    assert broken is not None and broken.status is Status.FAIL
    assert broken.reason == "kernel/bpf/hashtab.c:3:5: error: 'boom' undeclared"

    miss = by["kconfig-miss"]
    assert miss.stage(Stage.KCONFIG).status is Status.FAIL  # type: ignore[union-attr]
    assert [m.symbol for m in miss.kconfig] == ["CONFIG_NEEDS_DEP"]
    assert miss.stage(Stage.BUILD).status is Status.SKIPPED  # type: ignore[union-attr]

    # Identical trees are built once; tweak recompiled only the file it changed.
    assert by["same-as-base"].build.shared_with == "base"  # type: ignore[union-attr]
    assert by["same-as-base"].build.artifact_dir == by["base"].build.artifact_dir  # type: ignore[union-attr]
    # (make -j may log a build's files in any order: compare counts)
    assert sorted(_compiled(tmp_path / "cache")) == sorted([
        "kernel/bpf/hashtab.c", "kernel/bpf/memalloc.c", "kernel/fork.c",  # base, clean
        "kernel/bpf/memalloc.c",  # tweak, incremental
        "kernel/bpf/memalloc.c",  # back to the base contents for broken
    ])  # fmt: skip
    artifact = Path(by["tweak"].build.artifact_dir)  # type: ignore[union-attr]
    assert {p.name for p in artifact.iterdir()} >= {"vmlinux", "bzImage", ".config", "build.log"}
    assert "CONFIG_BPF=y" in (artifact / ".config").read_text()


def test_unchanged_matrix_compiles_nothing(project: Path, tmp_path: Path) -> None:
    _run(project, tmp_path, "run1")
    before = _compiled(tmp_path / "cache")
    code, run = _run(project, tmp_path, "run2")
    assert code == 1
    assert _compiled(tmp_path / "cache") == before
    for v in run.variants:
        if v.name in ("base", "tweak", "same-as-base"):
            assert v.build is not None and v.build.cached, v.name


def test_plan_predicts_and_touches_nothing(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    matrix = str(project / "matrix.yaml")
    cache = tmp_path / "cache"
    assert cli.main(["plan", matrix, "--cache-dir", str(cache)]) == 0
    assert not cache.exists()
    first = capsys.readouterr().out
    assert "6 of 6 variants need a build" in first
    _run(project, tmp_path, "run1")
    capsys.readouterr()
    assert cli.main(["plan", matrix, "--cache-dir", str(cache)]) == 0
    second = capsys.readouterr().out
    assert "same tree as base: built once" in second
    assert "tweak" in second and "cached:" in second


def test_bad_matrix_exits_2_before_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    matrix = tmp_path / "m.yaml"
    matrix.write_text("variants:\n  - name: a\n    serie: x\n")
    cache = tmp_path / "cache"
    assert cli.main([str(matrix), "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err
    assert f"{matrix}:3: variants[0].serie:" in err
    assert "Traceback" not in err
    assert not cache.exists()
