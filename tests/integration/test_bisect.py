"""Bisect and reproduce through the CLI on the fake tree: real git, real make
(incremental, in the shared build directory), the real units and reports; the
guest is the scripted one of test_runner.py, whose smoke test fails when the
kernel it boots carries a marker that the second of three patches adds."""

from __future__ import annotations

import contextlib
import os
import pty
import shutil
import socket
import termios
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_UNKNOWN_CHANNEL_TYPE,
    OPEN_SUCCEEDED,
)

from orchestrator import cli, proc, reproduce, results
from orchestrator.git import git
from orchestrator.results import RunResult, StepStatus, Verdict
from orchestrator.vm import guest
from orchestrator.vm.guest import Booted
from orchestrator.vm.image import Keys
from orchestrator.vm.qemu import VmSpec
from tests.fakes import FakeExec, HealthyGuest
from tests.integration.test_runner import FAKELINUX, ScriptedGuest

pytestmark = pytest.mark.integration
MARKER = "SMOKE_BREAKS_HERE"


class BreakableGuest(ScriptedGuest):
    """Its smoke test fails on a kernel built from a tree that has MARKER."""

    def run(self, command: str, *, timeout: float, stdout: Path, stderr: Path) -> FakeExec:
        if MARKER not in self.kernel.read_text():
            return super().run(command, timeout=timeout, stdout=stdout, stderr=stderr)
        self.commands.append(command)
        stdout.write_text("KTAP version 1\n1..1\nnot ok 1 smoke # the marker is in\n")
        stderr.write_text("")
        return FakeExec(1)


def _fake_boots(
    monkeypatch: pytest.MonkeyPatch, make: Callable[[Path, int], HealthyGuest]
) -> list[Path]:
    """Boots that never start QEMU, each yielding make(kernel, boot number);
    returns the kernels booted, in order."""
    kernels: list[Path] = []

    @contextlib.contextmanager
    def boot(spec: VmSpec, keys: Keys, timeout: float) -> Iterator[tuple[HealthyGuest, Booted]]:
        kernels.append(spec.kernel)
        spec.console_log.parent.mkdir(parents=True, exist_ok=True)
        spec.console_log.write_text("fake console\n")
        yield make(spec.kernel, len(kernels)), Booted(1.0, 0.5)

    monkeypatch.setattr(guest, "boot", boot)
    return kernels


@pytest.fixture()
def booted(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Boots of BreakableGuests; the kernels booted, in order."""
    return _fake_boots(monkeypatch, lambda kernel, _: BreakableGuest(kernel, []))


def _series(tree: Path, out: Path) -> None:
    """Three patches; the second puts MARKER into kernel/fork.c."""
    for path, old, new, subject in (
        ("kernel/bpf/memalloc.c", "= 8", "= 16", "bpf: bigger unit"),
        ("kernel/fork.c", "return 0", f"return 0; /* {MARKER} */", "fork: break smoke"),
        ("kernel/bpf/hashtab.c", "= 16", "= 32", "bpf: more buckets"),
    ):
        file = tree / path
        file.write_text(file.read_text().replace(old, new))
        git(tree, "commit", "-q", "-a", "-m", subject)
    git(tree, "format-patch", "-q", "-3", "-o", out, "HEAD")
    git(tree, "reset", "-q", "--hard", "HEAD~3")


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    tree = tmp_path / "linux"
    shutil.copytree(FAKELINUX, tree)
    git(tree, "init", "-q", "-b", "master")
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "fake linux")
    proj = tmp_path / "proj"
    _series(tree, proj / "patches" / "three")
    (proj / "base.config").write_text("CONFIG_BPF=y\n")
    (proj / "matrix.yaml").write_text(
        textwrap.dedent(f"""\
        name: fake
        tree: {{path: {tree}}}
        kconfig: {{fragments: [base.config]}}
        guest: {{accel: tcg}}
        tests:
          - {{name: smoke, kind: ktap, command: /bin/smoke}}
        bisect: {{enabled: true, runs: 3}}
        report: {{baseline: base}}
        variants:
          - name: base
          - name: three
            series: patches/three
        """)
    )
    return proj


def _compiled(cache: Path) -> list[str]:
    return [
        line
        for log in sorted(cache.glob("work/build/*/out/compiled.log"))
        for line in log.read_text().split()
    ]


def _run(project: Path, tmp: Path) -> tuple[int, Path]:
    out = tmp / "run"
    code = cli.main(
        ["run", str(project / "matrix.yaml"), "--cache-dir", str(tmp / "cache"), "--out", str(out)]
    )
    return code, out / "results.json"


def test_a_run_with_bisect_finds_the_second_patch(
    project: Path, tmp_path: Path, booted: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, path = _run(project, tmp_path)
    assert code == 1
    run = results.read(path)
    by = {v.name: v for v in run.variants}
    assert [t.verdict for t in by["base"].tests] == [Verdict.PASS]
    assert [t.verdict for t in by["three"].tests] == [Verdict.FAIL]
    assert by["base"].bisect == ()
    (found,) = by["three"].bisect
    assert (found.test, found.runs, found.first_bad) == ("smoke", 3, 2)
    assert found.subject == "fork: break smoke"
    assert found.commit == by["three"].patches[1].commit
    assert found.source.endswith("0002-fork-break-smoke.patch")
    steps = [(s.patches, s.status, s.failures, s.runs) for s in found.steps]
    assert steps == [(1, StepStatus.GOOD, 0, 3), (2, StepStatus.BAD, 3, 3)]
    assert found.summary == (
        "patch 2 (fork: break smoke): bad in 3/3 runs; good in 0/3 runs at patch 1; 96.1% sure"
    )
    # Each step booted once and ran its test 3 times; the run booted base and three.
    assert len(booted) == 4
    # Steps are built incrementally in the variants' shared build directory:
    # base (all 3 files), three (its 3 changed files), then step 1 (memalloc.c
    # stays, fork.c and hashtab.c back) and step 2 (fork.c).
    assert sorted(_compiled(tmp_path / "cache")) == sorted([
        "kernel/bpf/hashtab.c", "kernel/bpf/memalloc.c", "kernel/fork.c",
        "kernel/bpf/hashtab.c", "kernel/bpf/memalloc.c", "kernel/fork.c",
        "kernel/bpf/hashtab.c", "kernel/fork.c",
        "kernel/fork.c",
    ])  # fmt: skip
    step_logs = tmp_path / "run" / "bisect" / "three" / "smoke"
    assert (step_logs / "step-2" / "logs" / "three" / "build.log").is_file()
    # The reports name it.
    html = (tmp_path / "run" / "report.html").read_text()
    assert "First bad patch: smoke" in html and "fork: break smoke" in html
    summary = (tmp_path / "run" / "summary.txt").read_text()
    assert "first bad patch for smoke: patch 2 (fork: break smoke)" in summary
    assert "three smoke: patch 2 (fork: break smoke)" in capsys.readouterr().out


def test_bisect_command_updates_the_results_and_reports(
    project: Path, tmp_path: Path, booted: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    matrix = project / "matrix.yaml"
    matrix.write_text(matrix.read_text().replace("bisect: {enabled: true, runs: 3}\n", ""))
    code, path = _run(project, tmp_path)
    assert code == 1 and results.read(path).variants[1].bisect == ()
    before = len(booted)
    capsys.readouterr()
    assert cli.main(["bisect", str(path), "three", "smoke", "--runs", "2"]) == 0
    out = capsys.readouterr().out
    assert "three smoke: patch 2 (fork: break smoke): bad in 2/2 runs" in out
    run: RunResult = results.read(path)
    (found,) = run.variants[1].bisect
    assert found.first_bad == 2 and found.runs == 2
    assert len(booted) == before + 2
    assert "First bad patch: smoke" in (path.parent / "report.html").read_text()
    # Again: the record for that test is replaced, not added to; nothing is rebuilt.
    compiled = _compiled(tmp_path / "cache")
    assert cli.main(["bisect", str(path), "three", "smoke", "--runs", "1"]) == 0
    assert [b.runs for b in results.read(path).variants[1].bisect] == [1]
    assert _compiled(tmp_path / "cache") == compiled


def test_bisect_of_a_test_the_whole_series_passes_says_so(
    project: Path, tmp_path: Path, booted: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = _run(project, tmp_path)
    capsys.readouterr()
    assert cli.main(["bisect", str(path), "base", "smoke", "--runs", "1"]) == 1
    assert "the variant has no patches to bisect" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope", "smoke"], "no variant 'nope' in this run (its variants: base, three)"),
        (["three", "nope"], "no test 'nope' in the matrix (its tests: smoke)"),
        (["three", "smoke", "--runs", "0"], "--runs must be 1 to 100, not 0"),
    ],
)
def test_bisect_bad_input_is_exit_2(
    project: Path,
    tmp_path: Path,
    booted: list[Path],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    _, path = _run(project, tmp_path)
    capsys.readouterr()
    assert cli.main(["bisect", str(path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_reproduce_boots_the_variants_kernel_and_runs_its_test(
    project: Path, tmp_path: Path, booted: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    matrix = project / "matrix.yaml"
    matrix.write_text(matrix.read_text().replace("bisect: {enabled: true, runs: 3}\n", ""))
    _, path = _run(project, tmp_path)
    run = results.read(path)
    artifact = Path(run.variants[1].build.artifact_dir)  # type: ignore[union-attr]
    capsys.readouterr()
    assert cli.main(["reproduce", str(path), "three", "smoke"]) == 1
    out = capsys.readouterr().out
    assert f"kernel: {artifact} (from the run)" in out
    assert "== smoke: FAIL" in out and "not ok 1 smoke # the marker is in" in out
    assert booted[-1] == artifact / "vmlinux"
    assert cli.main(["reproduce", str(path), "base"]) == 0
    assert "== smoke: PASS" in capsys.readouterr().out
    # The artifact gone from the cache: built again, the same tree and config.
    compiled = _compiled(tmp_path / "cache")
    shutil.rmtree(artifact)
    assert cli.main(["reproduce", str(path), "three", "smoke"]) == 1
    out = capsys.readouterr().out
    assert "not in the cache any more; building it" in out and "== smoke: FAIL" in out
    assert (artifact / "vmlinux").is_file() and booted[-1] == artifact / "vmlinux"
    # (make ran, and had nothing to compile: the shared build dir holds that tree)
    assert (artifact / "build.log").is_file() and _compiled(tmp_path / "cache") == compiled
    # Its logs are its own, beside the run's.
    assert list((path.parent / "reproduce" / "three").iterdir())


def test_reproduce_shell_needs_a_terminal(
    project: Path, tmp_path: Path, booted: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = _run(project, tmp_path)
    capsys.readouterr()
    booted.clear()
    assert cli.main(["reproduce", str(path), "three", "--shell"]) == 2
    err = capsys.readouterr().err
    assert "--shell needs a terminal" in err and "Traceback" not in err
    assert booted == []


def test_reproduce_refuses_what_is_not_a_results_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "results.json"
    bad.write_text('{"schema": 2, "variants": "\\u001b[2J"}')
    assert cli.main(["reproduce", str(bad), "v"]) == 2
    assert cli.main(["reproduce", str(tmp_path / "none.json"), "v"]) == 2
    err = capsys.readouterr().err
    assert "not a results file" in err and "no such file" in err and "\x1b" not in err


def test_a_step_that_does_not_build_is_skipped(
    project: Path, tmp_path: Path, booted: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Patch 1 breaks the build, patch 2 mends it and breaks smoke: 1 or 2 is to blame."""
    tree = tmp_path / "linux"
    out = project / "patches" / "skip"
    for file_name, old, new, subject in (
        ("kernel/bpf/hashtab.c", "= 16", "= BUILD_ERROR", "bpf: break the build"),
        ("kernel/bpf/hashtab.c", "= BUILD_ERROR", f"= 16; /* {MARKER} */", "bpf: mend it"),
    ):
        file = tree / file_name
        file.write_text(file.read_text().replace(old, new))
        git(tree, "commit", "-q", "-a", "-m", subject)
    git(tree, "format-patch", "-q", "-2", "-o", out, "HEAD")
    git(tree, "reset", "-q", "--hard", "HEAD~2")
    matrix = project / "matrix.yaml"
    matrix.write_text(matrix.read_text().replace("patches/three", "patches/skip"))
    code, path = _run(project, tmp_path)
    assert code == 1
    (found,) = results.read(path).variants[1].bisect
    assert found.first_bad == 0 and found.candidates == (1, 2)
    assert [(s.patches, s.status) for s in found.steps] == [
        (1, StepStatus.SKIP), (2, StepStatus.BAD), (0, StepStatus.GOOD),
    ]  # fmt: skip
    assert found.steps[0].reason == "build: kernel/bpf/hashtab.c:3:5: error: 'boom' undeclared"
    assert found.summary == (
        "patches 1, 2 could not all be tested (skipped): the first bad one is among them"
    )
    assert "three smoke: patches 1, 2 could not all be tested" in capsys.readouterr().out


def test_names_from_the_results_file_make_no_paths(
    project: Path, tmp_path: Path, booted: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A results file may come from anywhere: a variant it names must be the matrix's."""
    _, path = _run(project, tmp_path)
    text = path.read_text().replace('"name": "three"', '"name": "../../evil"')
    path.write_text(text)
    capsys.readouterr()
    for command in ("reproduce", "bisect"):
        assert cli.main([command, str(path), "../../evil", "smoke"]) == 2
        assert "no such variant in" in capsys.readouterr().err
    assert not (tmp_path / "evil").exists() and not (path.parent / "reproduce").exists()


class _ShellServer(paramiko.ServerInterface):
    """Accepts the client key, a pty and a shell; the shell echoes and exits on "exit"."""

    def __init__(self, client_key: paramiko.PKey) -> None:
        self.client_key = client_key
        self.pty: tuple[str, int, int] | None = None
        self.shell = threading.Event()

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = username == "root" and key == self.client_key
        return AUTH_SUCCESSFUL if ok else AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return OPEN_SUCCEEDED if kind == "session" else OPEN_FAILED_UNKNOWN_CHANNEL_TYPE

    def check_channel_pty_request(self, *args: object) -> bool:
        _channel, term, width, height = args[:4]
        self.pty = (str(term), int(width), int(height))  # type: ignore[call-overload]
        return True

    def check_channel_shell_request(self, channel: paramiko.Channel) -> bool:
        self.shell.set()
        return True


def test_reproduce_shell_pumps_a_terminal(tmp_path: Path) -> None:
    """The --shell pump with a real pty on our side and a real SSH server on the other."""
    for name in ("client", "host"):
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)]
        proc.run(keygen, timeout=30).check()
    keys = Keys(
        client_private=tmp_path / "client",
        client_public=(tmp_path / "client.pub").read_text().strip(),
        host_private=tmp_path / "host",
        host_public=" ".join((tmp_path / "host.pub").read_text().split()[:2]),
    )
    client_key = paramiko.Ed25519Key.from_private_key_file(str(tmp_path / "client"))
    server = _ShellServer(client_key)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    transports: list[paramiko.Transport] = []

    def serve() -> None:
        conn, _ = listener.accept()
        transport = paramiko.Transport(conn)
        transports.append(transport)
        transport.add_server_key(paramiko.Ed25519Key.from_private_key_file(str(tmp_path / "host")))
        transport.start_server(server=server)
        channel = transport.accept(60)
        assert channel is not None and server.shell.wait(60)
        channel.sendall(b"guest# ")
        prompted.set()
        while data := channel.recv(1024):
            channel.sendall(b"got " + data)
            if b"exit" in data:
                channel.send_exit_status(3)
                channel.close()
                break

    prompted = threading.Event()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    master, terminal = pty.openpty()
    out_read, out_write = os.pipe()

    def type_exit() -> None:
        # Typed once the shell is up, so the terminal is in raw mode: CR stays CR.
        if prompted.wait(60):
            time.sleep(0.3)
            os.write(master, b"exit\r")

    threading.Thread(target=type_exit, daemon=True).start()

    # Should the server side fail (a loaded machine), end the session: a failed
    # test, never a hung one.
    def hang_up() -> None:
        for transport in transports:
            transport.close()

    watchdog = threading.Timer(120, hang_up)
    watchdog.start()
    try:
        code = reproduce.interactive(port, keys, terminal, out_write)
        os.close(out_write)
        with os.fdopen(out_read, "rb") as f:
            shown = f.read()
        assert code == 3
        assert shown == b"guest# got exit\r"
        assert server.pty is not None and server.pty[1] > 0
        # The terminal is back as it was: echo and line mode on.
        attrs = termios.tcgetattr(terminal)
        assert attrs[3] & termios.ECHO and attrs[3] & termios.ICANON
    finally:
        watchdog.cancel()
        os.close(master)
        os.close(terminal)
        listener.close()
    thread.join(10)


# --- a perf test: the first patch that makes it slower ------------------------------------


class SlowingGuest(ScriptedGuest):
    """Its map_perf reports ~1000 events/s, ~30 % fewer on a kernel whose tree has
    MARKER; each boot's sample differs a little (boot-to-boot noise)."""

    def __init__(self, kernel: Path, boots: list[str], boot: int) -> None:
        super().__init__(kernel, boots)
        self.boot = boot

    def run(self, command: str, *, timeout: float, stdout: Path, stderr: Path) -> FakeExec:
        if "map_perf" not in command:
            return super().run(command, timeout=timeout, stdout=stdout, stderr=stderr)
        self.commands.append(command)
        rate = (700.0 if MARKER in self.kernel.read_text() else 1000.0) + self.boot % 5
        stdout.write_text(
            f"KTAP version 1\n1..1\nok 1 map_perf\n# metric: events_per_sec {rate}\n"
            f"# metric: events_per_sec_cpu0 {rate / 2}\n"
        )
        stderr.write_text("")
        return FakeExec(0)


@pytest.fixture()
def perf_booted(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Boots of SlowingGuests; the kernels booted, in order."""
    return _fake_boots(monkeypatch, lambda kernel, n: SlowingGuest(kernel, [], n))


def _perf_matrix(project: Path) -> None:
    matrix = project / "matrix.yaml"
    text = matrix.read_text().replace(
        "  - {name: smoke, kind: ktap, command: /bin/smoke}\n",
        "  - {name: map_perf, kind: map_perf, command: /bin/map_perf, repeats: 5}\n",
    )
    matrix.write_text(text)


def test_a_run_with_bisect_finds_the_patch_that_makes_it_slower(
    project: Path, tmp_path: Path, perf_booted: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _perf_matrix(project)
    code, path = _run(project, tmp_path)
    run = results.read(path)
    by = {v.name: v for v in run.variants}
    assert by["base"].bisect == ()
    (found,) = by["three"].bisect
    assert (found.test, found.metric, found.first_bad) == ("map_perf", "events_per_sec", 2)
    assert found.runs == 5  # the matrix's 3 runs, raised to the 5 boots a comparison needs
    assert found.subject == "fork: break smoke"
    steps = {s.patches: s for s in found.steps}
    assert [(s.patches, s.status) for s in found.steps] == [
        (0, StepStatus.GOOD), (1, StepStatus.GOOD), (2, StepStatus.BAD),
    ]  # fmt: skip
    assert steps[0].ratio == 1.0 and steps[0].runs == 5
    assert steps[2].ratio is not None and 0.69 < steps[2].ratio < 0.71
    assert steps[2].ci_low is not None and steps[2].ci_high is not None
    assert steps[2].ci_low <= steps[2].ratio <= steps[2].ci_high < 0.8
    assert steps[2].median is not None and 700 <= steps[2].median < 705
    assert steps[1].ratio is not None and 0.99 < steps[1].ratio < 1.01
    assert 0.9 < found.confidence < 1.0
    assert found.summary.startswith(
        "patch 2 (fork: break smoke): events_per_sec slower: 0.70x of the base"
    )
    assert "not slower: 1.00x of the base" in found.summary and "at patch 1" in found.summary
    # The run: a boot and 6 perf rounds (one a warm-up) of 2 variants; then the base,
    # steps 1 and 2 each 1 + 5 boots (a boot check, then one sample per boot).
    assert len(perf_booted) == 2 * 7 + 3 * 6
    html = (tmp_path / "run" / "report.html").read_text()
    assert "First bad patch: map_perf (events_per_sec slower)" in html
    assert '<td class="num">1.000 (1.000\u20131.000)</td>' in html and "0.70" in html
    summary = (tmp_path / "run" / "summary.txt").read_text()
    assert "first bad patch for map_perf: patch 2 (fork: break smoke)" in summary
    assert "three map_perf: patch 2 (fork: break smoke)" in capsys.readouterr().out
    assert code == 0  # slower is a perf verdict, no failure of the run


def test_bisect_of_a_perf_test_that_is_never_slower_did_not_reproduce(
    project: Path, tmp_path: Path, perf_booted: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _perf_matrix(project)
    matrix = project / "matrix.yaml"
    # No patch carries the marker: nothing gets slower.
    for patch in (project / "patches" / "three").iterdir():
        patch.write_text(patch.read_text().replace(MARKER, "NOTHING_HERE"))
    matrix.write_text(matrix.read_text().replace("bisect: {enabled: true, runs: 3}\n", ""))
    _, path = _run(project, tmp_path)
    capsys.readouterr()
    before = len(perf_booted)
    argv = ["bisect", str(path), "three", "map_perf", "--runs", "5", "--metric", "events_per_sec"]
    assert cli.main(argv) == 1
    out = capsys.readouterr().out
    assert (
        "three map_perf: the slowdown did not reproduce: with the whole series it measured" in out
    )
    (found,) = results.read(path).variants[1].bisect
    assert found.first_bad == 0 and found.confidence == 0.0 and found.metric == "events_per_sec"
    assert [(s.patches, s.status) for s in found.steps] == [
        (0, StepStatus.GOOD), (1, StepStatus.GOOD), (2, StepStatus.GOOD), (3, StepStatus.GOOD),
    ]  # fmt: skip
    assert len(perf_booted) == before + 4 * 6


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--runs", "3"], "map_perf is a perf test: a step takes at least 5 boots"),
        (["--metric", "nope"], "map_perf: the base reports no metric 'nope' (it reports: "),
    ],
)
def test_perf_bisect_bad_input_is_exit_2(
    project: Path,
    tmp_path: Path,
    perf_booted: list[Path],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    _perf_matrix(project)
    matrix = project / "matrix.yaml"
    matrix.write_text(matrix.read_text().replace("bisect: {enabled: true, runs: 3}\n", ""))
    _, path = _run(project, tmp_path)
    capsys.readouterr()
    assert cli.main(["bisect", str(path), "three", "map_perf", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
