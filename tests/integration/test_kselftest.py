"""In-tree kselftests on a fake kernel tree: real make, real cache, a scripted guest.

The fake tree's tools/testing/selftests/bpf/Makefile behaves like 6.1's on a
kernel without BTF (it fails, saying so) or builds a stand-in test_progs;
the guest is faked because the fake kernel cannot boot (tests/e2e boots
real ones).
"""

from __future__ import annotations

import contextlib
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import cli, results, suites
from orchestrator.git import git
from orchestrator.results import Stage, Status, Verdict
from orchestrator.sandbox import Sandbox
from orchestrator.suites import kselftest
from orchestrator.vm import guest
from tests.fakes import FakeExec, HealthyGuest

pytestmark = pytest.mark.integration
FAKELINUX = Path(__file__).parent.parent / "fakelinux"

# Like 6.1's: vmlinux.h comes from the kernel's BTF, which tinyconfig kernels lack.
FAILING = """\
$(OUTPUT)/test_progs:
\t@echo "  GEN      vmlinux.h"
\t@grep -q BTF $(VMLINUX_BTF) || { echo "Error: failed to load BTF from $(VMLINUX_BTF): No data available"; exit 1; }
"""  # noqa: E501
# A stand-in: a dynamically linked "test_progs", a BPF object, a build intermediate.
BUILDING = """\
$(OUTPUT)/test_progs:
\t@echo built >> $(OUTPUT)/runs
\t@cp /bin/true $@
\t@echo obj > $(OUTPUT)/htab.bpf.o
\t@echo obj > $(OUTPUT)/test_progs.o
"""


def _tree(root: Path, makefile: str) -> Path:
    tree = root / "linux"
    shutil.copytree(FAKELINUX, tree)
    bpf = tree / "tools/testing/selftests/bpf"
    bpf.mkdir(parents=True)
    (bpf / "Makefile").write_text(makefile)
    git(tree, "init", "-q", "-b", "master")
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "fake linux")
    return tree


def _kernel(tmp_path: Path, makefile: str) -> suites.Kernel:
    tree = _tree(tmp_path, makefile)
    vmlinux = tmp_path / "artifacts" / "vmlinux"
    vmlinux.parent.mkdir()
    vmlinux.write_text("no debug info in here\n")
    return suites.Kernel(tree, tmp_path / "out", vmlinux, "tree-config")


def test_build_failure_names_the_cause_and_the_log(tmp_path: Path) -> None:
    kernel = _kernel(tmp_path, FAILING)
    log = tmp_path / "logs" / "kselftest.log"
    installed = kselftest.install(
        kernel, ["bpf/test_progs"], tmp_path / "cache", log, jobs=1, timeout=60, sandbox=Sandbox()
    )
    assert installed.files == ()
    reason = installed.error("bpf/test_progs")
    assert reason == (
        f"bpf/test_progs did not build: Error: failed to load BTF from {kernel.vmlinux}: "
        f"No data available (log: {log})"
    )
    assert kselftest.cached(tmp_path / "cache", kernel, "bpf/test_progs", log) is None


def test_build_installs_the_program_its_objects_and_libraries_once(tmp_path: Path) -> None:
    kernel = _kernel(tmp_path, BUILDING)
    cache, log = tmp_path / "cache", tmp_path / "kselftest.log"
    installed = kselftest.install(
        kernel, ["bpf/test_progs"], cache, log, jobs=1, timeout=60, sandbox=Sandbox()
    )
    assert installed.errors == ()
    files = dict(installed.files)
    assert {p for p in files if p.startswith("/opt/")} == {
        "/opt/kselftests/bpf/test_progs", "/opt/kselftests/bpf/htab.bpf.o",
    }  # fmt: skip
    assert files["/opt/kselftests/bpf/test_progs"].stat().st_mode & 0o100
    assert any("libc.so" in p for p in files)  # what /bin/true links against
    again = kselftest.install(
        kernel, ["bpf/test_progs"], cache, log, jobs=1, timeout=60, sandbox=Sandbox()
    )
    assert again == installed
    runs = kselftest.cache_dir(cache, kernel.key, "bpf/test_progs") / "build" / "runs"
    assert runs.read_text() == "built\n"  # make ran once


class _Guest(HealthyGuest):
    """A guest that answers every command with a passing KTAP program."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def run(self, command: str, *, timeout: float, stdout: Path, stderr: Path) -> FakeExec:
        self.commands.append(command)
        stdout.write_text("KTAP version 1\n1..1\nok 1 works\n")
        stderr.write_text("")
        return FakeExec(duration=0.1)


def test_a_variant_whose_test_progs_cannot_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = _tree(tmp_path, FAILING)
    sessions: list[_Guest] = []

    @contextlib.contextmanager
    def fake_boot(spec: object, keys: object, timeout: float) -> Iterator[tuple[_Guest, object]]:
        sessions.append(_Guest())
        yield sessions[-1], guest.Booted(seconds=0.5, console_ready=0.2)

    monkeypatch.setattr(guest, "boot", fake_boot)
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(
        textwrap.dedent(f"""\
        name: ks
        tree: {{path: {tree}}}
        guest: {{accel: tcg}}
        tests:
          - {{name: bpf_htab, kind: kselftest, args: {{filter: htab}}}}
          - {{name: smoke, kind: ktap, command: /bin/smoke}}
        variants:
          - name: base
        """)
    )
    out = tmp_path / "out"
    code = cli.main(["run", str(matrix), "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert "Traceback" not in capsys.readouterr().err
    assert code == 1  # an ERROR test is not what the matrix expects
    (variant,) = results.read(out / "results.json").variants
    assert [(s.stage, s.status) for s in variant.stages] == [
        (Stage.APPLY, Status.PASS), (Stage.KCONFIG, Status.PASS), (Stage.BUILD, Status.PASS),
        (Stage.BOOT, Status.PASS), (Stage.TEST, Status.FAIL),
    ]  # fmt: skip
    selftest, smoke = variant.tests
    assert selftest.verdict is Verdict.ERROR
    log = out / "logs" / "base" / "kselftest.log"
    assert selftest.reason.startswith("bpf/test_progs did not build: Error: failed to load BTF")
    assert selftest.reason.endswith(f"(log: {log})")
    assert "vmlinux.h" in log.read_text()
    assert smoke.verdict is Verdict.PASS  # the variant's other tests still ran
    assert [c for s in sessions for c in s.commands] == ["/bin/smoke"]
