"""Verdict rules of the test runner, against a scripted fake guest.

The real guest (QEMU + SSH) is exercised by tests/e2e; here only the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestrator.matrix import Test
from orchestrator.results import Splat, SplatKind, Verdict
from orchestrator.verdicts import meets
from orchestrator.vm.run_test import command_for, run_test

KTAP_OK = "KTAP version 1\n1..2\nok 1 first\nok 2 second\n"


@dataclass(frozen=True)
class FakeExec:
    exit_status: int | None
    timed_out: bool = False
    duration: float = 1.0


@dataclass
class FakeSession:
    output: str = KTAP_OK
    exit_status: int | None = 0
    timed_out: bool = False
    answers: bool = True
    sshd_dead: bool = False  # the kernel runs, its sshd does not
    killed: str | None = None  # QEMU died of this signal
    console_splats: list[Splat] = field(default_factory=list)
    kmsgs: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    def run(self, command: str, *, timeout: float, stdout: Path, stderr: Path) -> FakeExec:
        self.commands.append(command)
        stdout.write_text(self.output)
        stderr.write_text("")
        return FakeExec(self.exit_status, self.timed_out)

    def ping(self, timeout: float = 5.0) -> bool:
        return self.answers and not self.sshd_dead

    def kmsg(self, text: str) -> None:
        self.kmsgs.append(text)

    def alive(self) -> bool:
        return self.answers

    def splats(self) -> list[Splat]:
        return self.console_splats

    def sshd_gone(self) -> bool:
        return self.sshd_dead

    def qemu_killed(self) -> str | None:
        return self.killed

    def console_tail(self) -> str:
        return "[   5.0] rcu: INFO: rcu_sched self-detected stall on CPU\n"


TEST = Test(name="smoke", kind="ktap", command="/opt/selftests/smoke.sh", timeout=10)


def test_ktap_pass_with_markers(tmp_path: Path) -> None:
    session = FakeSession()
    result = run_test(session, TEST, tmp_path)
    assert result.verdict is Verdict.PASS
    assert [s.name for s in result.subtests] == ["smoke.first", "smoke.second"]
    assert session.kmsgs == ["orchestrate: begin test smoke", "orchestrate: end test smoke"]
    assert Path(result.logs[0]).read_text() == KTAP_OK


def test_timeout_while_guest_answers(tmp_path: Path) -> None:
    session = FakeSession(output="", exit_status=None, timed_out=True)
    result = run_test(session, TEST, tmp_path)
    assert result.verdict is Verdict.TIMEOUT
    assert "after 10s" in result.reason


def test_a_lost_sshd_is_an_error_not_the_kernels_fault(tmp_path: Path) -> None:
    session = FakeSession(output="", exit_status=None, sshd_dead=True)
    result = run_test(session, TEST, tmp_path)
    assert result.verdict is Verdict.ERROR and "sshd is gone" in result.reason


def test_qemu_killed_from_outside_is_an_error(tmp_path: Path) -> None:
    session = FakeSession(output="", exit_status=None, answers=False, killed="SIGKILL")
    result = run_test(session, TEST, tmp_path)
    assert result.verdict is Verdict.ERROR and "killed (SIGKILL) from outside" in result.reason


def test_dead_guest_is_a_kernel_hang(tmp_path: Path) -> None:
    session = FakeSession(output="", exit_status=None, timed_out=True, answers=False)
    result = run_test(session, TEST, tmp_path)
    assert result.verdict is Verdict.KERNEL_HANG
    assert "rcu_sched self-detected stall" in result.reason
    assert session.kmsgs == ["orchestrate: begin test smoke"]


def test_dead_guest_with_panic_is_a_crash(tmp_path: Path) -> None:
    panic = Splat(
        SplatKind.PANIC, "Kernel panic - not syncing: sysrq triggered crash", 9.5, test="smoke"
    )
    other = Splat(SplatKind.WARNING, "WARNING: at boot", 1.0, test=None)
    session = FakeSession(output="", exit_status=None, answers=False, console_splats=[other, panic])
    result = run_test(session, TEST, tmp_path)
    assert result.verdict is Verdict.CRASH
    assert result.reason == panic.title
    assert panic in result.splats


def test_splat_fails_a_passing_test(tmp_path: Path) -> None:
    warn = Splat(
        SplatKind.WARNING, "WARNING: CPU: 0 PID: 1 at kernel/bpf/memalloc.c:1", 3.0, test="smoke"
    )
    earlier = Splat(SplatKind.WARNING, "WARNING: from another test", 2.0, test="other")
    session = FakeSession(console_splats=[earlier, warn])
    result = run_test(session, TEST, tmp_path)
    assert result.verdict is Verdict.FAIL
    assert result.splats == (warn,)
    assert "kernel warning" in result.reason


def test_nonzero_exit_fails_a_passing_test(tmp_path: Path) -> None:
    result = run_test(FakeSession(exit_status=3), TEST, tmp_path)
    assert result.verdict is Verdict.FAIL and result.reason == "exit status 3"


def test_args_are_quoted_for_the_guest_shell() -> None:
    test = Test(name="p", kind="ktap", command="/opt/p", args=(("name", "a b; rm -rf /"),))
    assert command_for(test) == "/opt/p '--name=a b; rm -rf /'"


@pytest.mark.parametrize(
    ("verdict", "expected", "ok"),
    [
        (Verdict.PASS, "", True),
        (Verdict.SKIP, "", True),
        (Verdict.FAIL, "", False),
        (Verdict.FAIL, "fail", True),
        (Verdict.KERNEL_HANG, "fail", True),
        (Verdict.CRASH, "fail", True),
        (Verdict.PASS, "fail", False),
        (Verdict.KERNEL_HANG, "kernel-hang", True),
        (Verdict.FAIL, "kernel-hang", False),
        (Verdict.ERROR, "fail", False),
    ],
)
def test_expectations(verdict: Verdict, expected: str, ok: bool) -> None:
    assert meets(verdict, expected) is ok


def test_out_of_memory_is_named(tmp_path: Path) -> None:
    oom = Splat(SplatKind.OOM, "map_perf invoked oom-killer: gfp_mask=0x500cc2", 18.5, test="smoke")
    session = FakeSession(output="", exit_status=None, answers=False, console_splats=[oom])
    result = run_test(session, TEST, tmp_path)
    assert result.verdict is Verdict.KERNEL_HANG
    assert "out of memory" in result.reason and oom in result.splats


def test_kmemleak_fails_a_passing_test(tmp_path: Path) -> None:
    leak = Splat(SplatKind.KMEMLEAK, "kmemleak: 2 new suspected memory leaks", 7.0, test="smoke")
    result = run_test(FakeSession(console_splats=[leak]), TEST, tmp_path)
    assert result.verdict is Verdict.FAIL
    assert result.reason == "kernel kmemleak: kmemleak: 2 new suspected memory leaks"


def test_a_hard_lockup_panic_is_a_crash(tmp_path: Path) -> None:
    panic = Splat(
        SplatKind.PANIC,
        "Kernel panic - not syncing: Watchdog detected hard LOCKUP on cpu 1",
        30.0,
        test="smoke",
    )
    session = FakeSession(output="", exit_status=None, answers=False, console_splats=[panic])
    result = run_test(session, TEST, tmp_path)
    assert result.verdict is Verdict.CRASH and result.reason == panic.title


def test_a_storm_of_splats_is_counted_and_capped(tmp_path: Path) -> None:
    def warn(line: int, count: int = 1) -> Splat:
        title = f"WARNING: CPU: 0 PID: 1 at kernel/bpf/x.c:{line} f+0x1/0x2"
        return Splat(SplatKind.WARNING, title, 1.0, ("f+0x1/0x2",), "smoke", count)

    storm = [warn(i % 100, 200) for i in range(1000)]  # 100 distinct, 200 000 reports
    panic = Splat(SplatKind.PANIC, "Kernel panic - not syncing: boom", 9.0, test="smoke")
    session = FakeSession(output="", answers=False, console_splats=[*storm, panic])
    result = run_test(session, TEST, tmp_path)
    assert result.verdict is Verdict.CRASH and result.reason == panic.title
    kept, (summary, last) = result.splats[:20], result.splats[20:]
    assert kept == tuple(warn(i, 2000) for i in range(20))
    assert (summary.kind, summary.count, summary.test) == ("warning", 80 * 2000, "smoke")
    assert summary.title.startswith("orchestrate: further warning reports, not kept")
    assert last == panic
    assert sum(s.count for s in result.splats) == 200_001
