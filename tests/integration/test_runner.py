"""The runner on a fake kernel tree: every unit of a plan, real git and make.

tests/fakelinux is a tiny tree whose Makefile has kbuild's targets and O=
semantics and logs every compiled file, so these tests check real git, real
make incrementality and the CLI's exit codes in seconds.  Its "kernel"
cannot boot: where a test goes past the build, the guest is a scripted fake
session behind the real runner, test runner and suites (the real guest is
tested in e2e).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest

from orchestrator import cli, config, perf, results, suites
from orchestrator.cache import Cache
from orchestrator.executor import Executor, GuestExecutor, SerialExecutor, ThreadExecutor
from orchestrator.git import git
from orchestrator.matrix import Test
from orchestrator.plan import Unit
from orchestrator.results import (
    Batch,
    PatchOutcome,
    RunResult,
    Stage,
    Status,
    TestResult,
    Verdict,
)
from orchestrator.runner import Options, Runner, collect_series
from orchestrator.vm import guest
from orchestrator.vm.guest import Booted
from orchestrator.vm.image import Keys
from orchestrator.vm.qemu import VmSpec
from tests.fakes import FakeExec, HealthyGuest
from tests.procs import processes_with

T = TypeVar("T")

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
            # The run keeps its own copy of the log of the build it reuses.
            (log,) = v.stages[2].logs
            assert Path(log) == tmp_path / "run2" / "logs" / v.name / "build.log"
            assert Path(log).read_text().startswith("# cached: built by an earlier run")


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


# --- the whole plan, with a scripted guest --------------------------------------------------


class ScriptedGuest(HealthyGuest):
    """A booted guest answering each test's command with KTAP, a perf sample per boot."""

    def __init__(self, kernel: Path, boots: list[str]) -> None:
        self.kernel = kernel
        self.boots = boots
        self.commands: list[str] = []

    def run(self, command: str, *, timeout: float, stdout: Path, stderr: Path) -> FakeExec:
        self.commands.append(command)
        if command.startswith("countdown "):  # the toy kind's program
            stdout.write_text(f"T-{command.split()[1]}\nliftoff\n")
            return FakeExec(0)
        metric = "# metric: events_per_sec 1000\n" if "map_perf" in command else ""
        stdout.write_text(f"KTAP version 1\n1..1\n{metric}ok 1 {Path(command.split()[0]).name}\n")
        stderr.write_text("")
        return FakeExec(0)


@pytest.fixture()
def fake_boots(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Boots that never start QEMU: each yields a ScriptedGuest; returns the kernels booted."""
    booted: list[str] = []
    lock = threading.Lock()

    @contextlib.contextmanager
    def boot(spec: VmSpec, keys: Keys, timeout: float) -> Iterator[tuple[ScriptedGuest, Booted]]:
        with lock:
            booted.append(spec.console_log.parent.name)
        spec.console_log.write_text("fake console\n")
        yield ScriptedGuest(spec.kernel, booted), Booted(1.0, 0.5)

    monkeypatch.setattr(guest, "boot", boot)
    return booted


def _whole_matrix(project: Path) -> Path:
    matrix = project / "whole.yaml"
    text = (project / "matrix.yaml").read_text()
    head, variants = text.split("variants:\n")
    matrix.write_text(
        head
        + textwrap.dedent("""\
        guest: {accel: tcg}
        tests:
          - {name: smoke, kind: ktap, command: /bin/smoke, repeats: 2}
          - {name: map_perf, kind: map_perf, command: /bin/map_perf, repeats: 3}
        perf: {aa_control: true}
        report: {baseline: base}
        """)
        + "variants:\n"
        + variants
    )
    return matrix


def _run_whole(matrix: Path, tmp: Path, name: str, executor: Executor) -> RunResult:
    m = config.load(matrix)
    options = Options(cache=Cache(tmp / f"cache-{name}"), run_dir=tmp / f"run-{name}")
    return Runner(m, options, lambda *_: None, executor).run(collect_series(m, ()))


def _comparable(run: RunResult, tmp: Path, name: str) -> str:
    """The results JSON with this run's times and directories taken out."""
    text = json.dumps(results.to_data(run), indent=1, sort_keys=True)
    text = text.replace(str(tmp / f"cache-{name}"), "<cache>").replace(
        str(tmp / f"run-{name}"), "<run>"
    )
    # spent: the perf rounds' seconds, as the time they took varies
    text = re.sub(r'"(duration|seconds|spent)": [0-9.e-]+', r'"\1": 0', text)
    return re.sub(r'"(started|finished)": "[^"]*"', r'"\1": ""', text)


class RoundTrip:
    """A thread-pool executor whose units' results cross a JSON boundary, as
    they would to reach another process or machine."""

    def __init__(self, workers: int) -> None:
        self.threads = ThreadExecutor(workers)
        self.capacity = workers

    def submit(self, unit: Unit, work: Callable[[], T]) -> Future[T]:
        def crossed() -> T:
            out = work()
            return results.from_data(type(out), json.loads(json.dumps(results.to_data(out))))

        return self.threads.submit(unit, crossed)

    def shutdown(self) -> None:
        self.threads.shutdown()


def test_a_plan_runs_the_same_serially_and_in_threads(
    project: Path, tmp_path: Path, fake_boots: list[str]
) -> None:
    matrix = _whole_matrix(project)
    serial = _run_whole(matrix, tmp_path, "serial", SerialExecutor())
    by = {v.name: v for v in serial.variants}
    assert [s.status for s in by["base"].stages] == [Status.PASS] * 5
    assert [t.label for t in by["base"].tests] == [
        "smoke@1", "smoke@2", "map_perf@1", "map_perf@2", "map_perf@3",
    ]  # fmt: skip
    assert [(t.round, t.batch) for t in by["base"].tests[2:]] == [(1, 1), (2, 1), (3, 1)]
    assert serial.control is not None and serial.control.name == "base~aa"
    assert serial.batches == (Batch(1),) and serial.incomplete == ""
    # A failed variant skips the rest and is never booted; the others are, the
    # warm-up round included: one functional boot and four perf boots each.
    assert [s.status for s in by["broken"].stages][-2:] == [Status.SKIPPED] * 2
    assert "broken" not in fake_boots and fake_boots.count("tweak") == 5

    threaded = _run_whole(matrix, tmp_path, "threads", RoundTrip(3))
    assert _comparable(threaded, tmp_path, "threads") == _comparable(serial, tmp_path, "serial")


def test_results_are_written_after_every_unit(
    project: Path, tmp_path: Path, fake_boots: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[RunResult] = []
    write = results.write

    def spy(run: RunResult, path: Path) -> None:
        write(run, path)
        seen.append(results.read(path))

    monkeypatch.setattr(results, "write", spy)
    final = _run_whole(_whole_matrix(project), tmp_path, "spied", SerialExecutor())
    assert len(seen) > 20 and seen[-1] == final
    assert all(r.incomplete.startswith("running: ") for r in seen[:-1])
    # The first write knows only the tree; stages appear as their units finish.
    assert all(v.stages == () for v in seen[0].variants)
    assert [len(r.variants[0].stages) for r in seen] == sorted(
        len(r.variants[0].stages) for r in seen
    )


def _slow_project(project: Path) -> Path:
    tree = Path(config.load(project / "matrix.yaml").tree.location)
    _commit_patch(
        tree,
        project / "patches" / "slow",
        "kernel/fork.c",
        "return 0",
        "return 0; /* BUILD_SLOW */",
        "slow",
    )
    matrix = project / "slow.yaml"
    matrix.write_text(
        (project / "matrix.yaml").read_text().split("variants:\n")[0]
        + "variants:\n  - name: base\n  - name: slow\n    series: patches/slow\n"
        + "  - name: tweak\n    series: patches/tweak\n"
    )
    return matrix


# With --vms 2 the units run in the guest executor's threads, where SIGTERM
# does not land: its shutdown stops them.
@pytest.mark.parametrize("vms", [[], ["--vms", "2"]], ids=["serial", "vms-2"])
def test_sigterm_leaves_partial_results_that_render_and_resume(
    project: Path, tmp_path: Path, vms: list[str]
) -> None:
    matrix = _slow_project(project)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "orchestrator.cli", "run", str(matrix), "--until", "build",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out), *vms]  # fmt: skip
    # A marker of this run's own processes: a scan for any `sleep 300` on the
    # machine also finds other tests' (and other users') sleepers.
    env = {**os.environ, "FAKELINUX_SLOW": "1", "ORCHESTRATE_TEST_RUN": str(tmp_path)}
    child = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        assert child.stdout is not None
        for line in child.stdout:  # until the slow variant's make is running
            if "[slow] build: ... - log:" in line:  # after the time
                break
        deadline = time.monotonic() + 30  # the marker reaches make's sleep (so the scan can fail)
        while not any(
            p.info["name"] == "sleep" for p in processes_with("ORCHESTRATE_TEST_RUN", str(tmp_path))
        ):
            assert time.monotonic() < deadline, "no sleeping make under the marker"
            time.sleep(0.05)
        child.send_signal(signal.SIGTERM)
        rest, _ = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130, rest
    assert "Traceback" not in rest
    run = results.read(out / "results.json")
    assert run.incomplete.startswith("interrupted (SIGTERM) after "), run.incomplete
    by = {v.name: v for v in run.variants}
    assert [s.status for s in by["base"].stages] == [Status.PASS] * 3
    assert [s.stage for s in by["slow"].stages] == [Stage.APPLY, Stage.KCONFIG]
    assert by["tweak"].stages[0].stage is Stage.APPLY and len(by["tweak"].stages) == 1
    # make and its sleep died with the run.
    assert processes_with("ORCHESTRATE_TEST_RUN", str(tmp_path)) == []
    # The partial results are reports like any others, and say they are partial.
    assert cli.main(["report", str(out / "results.json")]) == 0
    assert "interrupted (SIGTERM)" in (out / "summary.txt").read_text()
    assert "interrupted (SIGTERM)" in (out / "report.html").read_text()

    # --resume redoes only the interrupted build and what had not started.
    compiled = _compiled(tmp_path / "cache")
    apply_log = out / "logs" / "base" / "apply.log"
    applied_at = apply_log.stat().st_mtime_ns
    assert cli.main(["run", "--resume", str(out)]) == 0
    resumed = results.read(out / "results.json")
    assert resumed.incomplete == "" and resumed.started == run.started
    assert all([s.status for s in v.stages] == [Status.PASS] * 3 for v in resumed.variants)
    assert apply_log.stat().st_mtime_ns == applied_at  # base's units were not run again
    # make was killed in the shared build directory, so it was emptied and
    # slow built from clean; then tweak's memalloc.c and fork.c back to the base's.
    assert sorted(compiled) == ["kernel/bpf/hashtab.c", "kernel/bpf/memalloc.c", "kernel/fork.c"]
    assert sorted(_compiled(tmp_path / "cache")) == [
        "kernel/bpf/hashtab.c", "kernel/bpf/memalloc.c", "kernel/bpf/memalloc.c",
        "kernel/fork.c", "kernel/fork.c",
    ]  # fmt: skip


def test_resume_refuses_a_changed_matrix(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(project, tmp_path, "run1")
    (project / "kconfigs" / "base.config").write_text("CONFIG_BPF=y\nCONFIG_DEP=y\n")
    capsys.readouterr()
    assert cli.main(["run", "--resume", str(tmp_path / "run1")]) == 2
    err = capsys.readouterr().err
    assert "cannot resume: the matrix, its series or its tests changed" in err, err
    assert "Traceback" not in err


class Countdown(suites.Suite):
    """A toy kind: its program counts down and says liftoff, or does not."""

    kind = "countdown"

    def command(self, test: Test) -> str:
        return f"countdown {test.command}"

    def parse(self, stdout: str, name: str) -> TestResult:
        ok = stdout.rstrip().endswith("liftoff")
        return TestResult(name, Verdict.PASS if ok else Verdict.FAIL, metrics={"lines": 2.0})


@pytest.fixture()
def countdown() -> Iterator[None]:
    suites.register(Countdown())
    yield
    suites.unregister("countdown")


def test_a_new_kind_is_a_class_and_a_registration(
    project: Path, tmp_path: Path, fake_boots: list[str], countdown: None
) -> None:
    matrix = project / "toy.yaml"
    matrix.write_text(
        (project / "matrix.yaml").read_text().split("variants:\n")[0]
        + "guest: {accel: tcg}\n"
        + "tests:\n  - {name: launch, kind: countdown, command: '10'}\n"
        + "variants:\n  - name: base\n    expect: {}\n"
    )
    run = _run_whole(matrix, tmp_path, "toy", SerialExecutor())
    (base,) = run.variants
    (launch,) = base.tests
    assert (launch.name, launch.verdict, launch.metrics) == ("launch", Verdict.PASS, {"lines": 2.0})
    assert [s.status for s in base.stages] == [Status.PASS] * 5
    stdout = Path(launch.logs[0]).read_text()
    assert stdout == "T-10\nliftoff\n"


def test_a_hostile_makefile_is_contained_and_the_variant_still_built(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A series whose Makefile writes outside the build, reads ~/.ssh and opens a socket."""
    home, outside = tmp_path / "home", tmp_path / "outside"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_test").write_text("SECRET KEY\n")
    outside.mkdir()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("OUTSIDE", str(outside))
    monkeypatch.setenv("LISTENER", str(port))
    evil = (
        "O ?= .\n"
        "EVIL := $(shell echo pwned > $(OUTSIDE)/pwned; echo pwned > $(HOME)/pwned; "
        "cat $(HOME)/.ssh/id_test > $(O)/stolen; "
        "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", $(LISTENER)), 2)' "
        "&& echo connected > $(O)/net)"
    )
    tree = Path(config.load(project / "matrix.yaml").tree.location)
    _commit_patch(tree, project / "patches" / "evil", "Makefile", "O ?= .", evil, "evil")
    matrix = project / "evil.yaml"
    matrix.write_text(
        (project / "matrix.yaml").read_text().split("variants:\n")[0]
        + "variants:\n  - name: evil\n    series: patches/evil\n"
    )
    m = config.load(matrix)
    options = Options(cache=Cache(tmp_path / "cache"), run_dir=tmp_path / "run", until=Stage.BUILD)
    run = Runner(m, options, lambda *_: None).run(collect_series(m, ()))
    (variant,) = run.variants
    assert [s.status for s in variant.stages] == [Status.PASS] * 3  # it still got its verdict
    assert not (outside / "pwned").exists() and not (home / "pwned").exists()
    built = list((tmp_path / "cache" / "work" / "build").glob("*/out"))
    assert built and all("SECRET" not in p.read_text() for b in built for p in b.glob("stolen"))
    assert not any((b / "net").exists() for b in built)
    with pytest.raises(TimeoutError):
        listener.accept()
    listener.close()
    # Without the sandbox the same series does all three (so the test can fail).
    plain = Options(
        cache=Cache(tmp_path / "cache2"), run_dir=tmp_path / "run2", until=Stage.BUILD,
        sandbox=False,
    )  # fmt: skip
    Runner(m, plain, lambda *_: None).run(collect_series(m, ()))
    assert (outside / "pwned").exists() and (home / "pwned").exists()
    leaked = list((tmp_path / "cache2" / "work" / "build").glob("*/out/stolen"))
    assert leaked and "SECRET" in leaked[0].read_text()


def test_a_full_disk_mid_build_is_exit_3_not_a_build_failure(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = Path(config.load(project / "matrix.yaml").tree.location)
    full = "return 0; /* BUILD_ENOSPC */"
    _commit_patch(tree, project / "patches" / "full", "kernel/fork.c", "return 0", full, "full")
    matrix = project / "full.yaml"
    matrix.write_text(
        (project / "matrix.yaml").read_text().split("variants:\n")[0]
        + "variants:\n  - name: base\n  - name: full\n    series: patches/full\n"
    )
    out = tmp_path / "out"
    argv = [str(matrix), "--until", "build", "--cache-dir", str(tmp_path / "cache")]
    assert cli.main([*argv, "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert "disk full while building" in err and "Traceback" not in err
    run = results.read(out / "results.json")
    assert run.incomplete.startswith("stopped by an error after ")
    assert [s.status for s in run.variants[0].stages] == [Status.PASS] * 3


@pytest.fixture()
def guests_at_once(fake_boots: list[str], monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """fake_boots, where each of the first two boots (the functional ones, pinned to a
    CPU set each) waits until the other runs beside it; returns, per boot, the host
    CPUs of every guest up then."""
    fake = guest.boot
    lock = threading.Lock()
    up: dict[str, tuple[int, ...]] = {}
    seen: list[tuple[int, ...]] = []
    two = threading.Event()

    @contextlib.contextmanager
    def boot(spec: VmSpec, keys: Keys, timeout: float) -> Iterator[tuple[object, Booted]]:
        with lock:
            up[str(spec.console_log)] = spec.host_cpus
            seen.append(tuple(sorted(c for cpus in up.values() for c in cpus)))
            if len(up) == 2:
                two.set()
        try:
            if len(seen) <= 2:
                assert two.wait(60), "a second guest never booted beside this one"
            else:  # a perf round's: a moment for a round beside it to start (not required)
                deadline = time.monotonic() + 0.3
                while len(up) < 2 and time.monotonic() < deadline:
                    time.sleep(0.02)
            with fake(spec, keys, timeout) as booted:
                yield booted
        finally:
            with lock:
                del up[str(spec.console_log)]

    monkeypatch.setattr(guest, "boot", boot)
    return seen


def test_two_guests_boot_at_once_and_the_results_are_the_serial_runs(
    project: Path, tmp_path: Path, guests_at_once: list[tuple[int, ...]]
) -> None:
    matrix = _whole_matrix(project)
    parallel = _run_whole(matrix, tmp_path, "vms", GuestExecutor(((0,), (1,))))
    # Two functional guests were up at once, on CPU sets of their own; the
    # perf rounds (blocks: the plan is sequential) ran on both sets, each
    # round's guests pinned to one (side by side: tests/unit/test_executor.py).
    assert guests_at_once[1] == (0, 1)
    perf_boots = guests_at_once[2:]
    assert perf_boots and set(perf_boots) <= {(0,), (1,), (0, 1)}
    assert parallel.perf_plan and parallel.perf_plan.blocks == 2
    assert set(perf.places_of(parallel, 1).values()) == {"CPUs 0", "CPUs 1"}
    serial = _run_whole(matrix, tmp_path, "serial", SerialExecutor())
    # The same results, but for where the rounds ran and how many at once.
    plan = replace(parallel.perf_plan, blocks=1)
    as_serial = replace(parallel, workers=(), perf_plan=plan)
    assert _comparable(as_serial, tmp_path, "vms") == _comparable(serial, tmp_path, "serial")


def test_run_vms_2_pins_each_guest_to_cpus_of_its_own(
    project: Path, tmp_path: Path, fake_boots: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    matrix = _whole_matrix(project)
    matrix.write_text(
        matrix.read_text().replace("guest: {accel: tcg}", "guest: {accel: tcg, cpus: 1}")
    )
    pinned: list[tuple[int, ...]] = []
    fake = guest.boot

    def boot(spec: VmSpec, keys: Keys, timeout: float) -> contextlib.AbstractContextManager[object]:
        pinned.append(spec.host_cpus)
        return fake(spec, keys, timeout)

    monkeypatch.setattr(guest, "boot", boot)
    out = tmp_path / "out"
    argv = ["run", str(matrix), "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    assert cli.main([*argv, "--vms", "2"]) == 1  # the matrix has variants that fail
    cpus = sorted(os.sched_getaffinity(0))
    functional = {p for p in pinned if len(p) == 1}
    # Which set each got depends on how fast the fake boots end (two at once
    # is shown above): each had one CPU of the two sets.
    assert functional and functional <= {(c,) for c in cpus[:2]}
    assert {p for p in pinned if len(p) != 1} <= {tuple(cpus[:2])}
    vms = results.read(out / "results.json")
    serial = _run_whole(matrix, tmp_path, "serial", SerialExecutor())

    def verdicts(run: RunResult) -> list[tuple[str, list[object], list[object]]]:
        return [
            (v.name, [s.status for s in v.stages], [(t.label, t.verdict) for t in v.tests])
            for v in run.variants
        ]

    assert verdicts(vms) == verdicts(serial)
