"""Console splat parsing and the incremental watcher, on logs shaped like 6.1's output."""

from __future__ import annotations

import dataclasses
import io
import random
from pathlib import Path

import pytest

from orchestrator import results
from orchestrator.results import Splat, SplatKind
from orchestrator.vm import console
from orchestrator.vm.console import (
    MAX_LINE,
    SPLATS_PER_TEST,
    TAIL_LINES,
    TRACE_LIMIT,
    CappedLog,
    ConsoleCapture,
    ConsoleWatcher,
    SplatTally,
    scan,
)

DATA = Path(__file__).parent / "data" / "console"
FIXTURES = sorted(DATA.glob("*.log"))


def fixture(name: str) -> str:
    # newline="" keeps the serial console's "\r\n" as written.
    with (DATA / name).open(newline="") as f:
        return f.read()


def kinds(splats: list[Splat]) -> list[str]:
    return [s.kind for s in splats]


# --- whole reports, from the fixtures ---------------------------------------


def test_null_pointer_oops_then_panic_is_two_splats() -> None:
    text = fixture("null_deref_panic.log")
    assert "\r\n" in text  # a real serial console log
    oops, panic = scan(text)
    assert oops == Splat(
        kind=SplatKind.OOPS,
        title="BUG: kernel NULL pointer dereference, address: 0000000000000010",
        timestamp=9.482117,
        trace=(
            "<TASK>",
            "bpf_map_update_value+0x10d/0x1b0",
            "map_update_elem+0x1e3/0x2b0",
            "__sys_bpf+0x9ad/0x2a30",
            "? __handle_mm_fault+0x8c6/0xd50",
            "__x64_sys_bpf+0x1a/0x30",
            "do_syscall_64+0x58/0xc0",
            "? exit_to_user_mode_prepare+0x40/0x1e0",
            "entry_SYSCALL_64_after_hwframe+0x64/0xce",
            "</TASK>",  # after the user-space registers, which are not frames
        ),
        test="htab_reuse",
    )
    # After an oops, panic() prints no second stack dump.
    assert panic == Splat(
        SplatKind.PANIC, "Kernel panic - not syncing: Fatal exception", 9.510238, (), "htab_reuse"
    )


def test_soft_lockup_then_panic_with_irq_and_task_stacks() -> None:
    lockup, panic = scan(fixture("soft_lockup.log"))
    assert lockup.kind == "soft-lockup"  # not "bug", though the line says "BUG:"
    assert lockup.title == "watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [htab_reuse:203]"
    assert lockup.timestamp == 32.371206
    assert lockup.trace[:2] == ("<TASK>", "_raw_spin_lock_irqsave+0x3d/0x50")
    assert len(lockup.trace) == 12
    assert panic.title == "Kernel panic - not syncing: softlockup: hung tasks"
    # The interrupted task's registers sit in the middle of the trace; the
    # frames after them still belong to it.
    assert panic.trace[0] == "<IRQ>"
    assert panic.trace[8:12] == (
        "sysvec_apic_timer_interrupt+0x99/0xc0",
        "</IRQ>",
        "<TASK>",
        "asm_sysvec_apic_timer_interrupt+0x16/0x20",
    )
    assert panic.trace[12] == "_raw_spin_lock_irqsave+0x3d/0x50"
    assert panic.trace[-1] == "</TASK>" and len(panic.trace) == 22
    assert {lockup.test, panic.test} == {"htab_reuse"}


def test_rcu_stalls_take_their_own_backtrace_only() -> None:
    self_detected, detected = scan(fixture("rcu_stall.log"))
    assert kinds([self_detected, detected]) == ["rcu-stall", "rcu-stall"]
    assert self_detected.title == "rcu: INFO: rcu_preempt self-detected stall on CPU"
    assert self_detected.timestamp == 26.602113
    assert self_detected.trace[:3] == (
        "<IRQ>",
        "dump_stack_lvl+0x44/0x5c",
        "nmi_cpu_backtrace.cold+0x30/0x70",
    )
    assert detected.title == "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"
    assert detected.trace[1] == "_raw_spin_lock_irqsave+0x3d/0x50"
    # The grace-period kthread's dump that follows is not the stall's trace.
    assert len(detected.trace) == 11
    assert all("rcu_gp_kthread" not in line for line in detected.trace)


def test_hung_tasks_and_end_marker_attribution() -> None:
    first, second = scan(fixture("hung_task.log"))
    assert first == Splat(
        SplatKind.HUNG_TASK,
        "INFO: task kworker/0:1:12 blocked for more than 120 seconds.",
        247.530711,
        first.trace,
        "map_free",
    )
    assert first.trace[1] == "__schedule+0x34d/0x9e0" and len(first.trace) == 19
    # Reported after the test's end marker: no test is running any more.
    assert second.title == "INFO: task map_free:218 blocked for more than 241 seconds."
    assert second.test is None
    assert len(second.trace) == 14


def test_warnings_inside_and_outside_tests() -> None:
    boot, refill, lockdep = scan(fixture("warnings.log"))
    assert kinds([boot, refill, lockdep]) == ["warning"] * 3
    assert boot.test is None and boot.timestamp == 0.402118
    assert refill == Splat(
        SplatKind.WARNING,
        "WARNING: CPU: 1 PID: 198 at kernel/bpf/memalloc.c:342 bpf_mem_refill+0x1b4/0x1e0",
        5.201712,
        refill.trace,
        "memalloc_stress",
    )
    assert refill.trace[:2] == ("<IRQ>", "irq_work_single+0x3a/0x90")
    assert "? htab_map_update_elem+0x29d/0x3f0" in refill.trace
    assert len(refill.trace) == 17
    assert lockdep.title == "WARNING: suspicious RCU usage"
    assert lockdep.test == "htab_reuse"
    assert lockdep.trace[5] == "bpf_prog_7d4b9e5c1f1a2b3c_lookup_sleepable+0x4a/0x6e"


def test_sysrq_crash_is_one_panic() -> None:
    (panic,) = scan(fixture("sysrq_crash.log"))
    assert panic.kind == "panic"
    assert panic.title == "Kernel panic - not syncing: sysrq triggered crash"
    assert panic.timestamp == 15.412701
    assert panic.trace[4] == "sysrq_handle_crash+0x16/0x20"
    assert len(panic.trace) == 13
    assert panic.test == "crash_probe"


def test_sysrq_crash_whose_panic_the_console_lost() -> None:
    text = (
        "[   15.330104] orchestrate: begin test crash_probe\n"
        "[   15.412337] sysrq: Trigger a crash\n"
    )
    assert scan(text) == [
        Splat(SplatKind.PANIC, "sysrq: Trigger a crash", 15.412337, (), "crash_probe")
    ]


def test_sanitizer_reports() -> None:
    kasan, ubsan, kfence, kcsan = scan(fixture("sanitizers.log"))
    assert kasan.kind == "kasan"
    assert kasan.title == "BUG: KASAN: slab-use-after-free in htab_map_lookup_elem+0x7d/0x90"
    # The allocation and free stacks that follow are not the report's trace.
    assert len(kasan.trace) == 14 and kasan.trace[-1] == "</TASK>"
    assert ubsan.kind == "ubsan"
    assert ubsan.title == "UBSAN: array-index-out-of-bounds in kernel/bpf/hashtab.c:1789:21"
    assert ubsan.trace[2] == "__ubsan_handle_out_of_bounds.cold+0x44/0x49"
    # KFENCE and KCSAN print their stacks without a "Call Trace:" line.
    assert kfence.kind == "kfence" and kfence.timestamp == 14.00087
    assert kfence.trace[0] == "htab_elem_free_rcu+0x2a/0x50" and len(kfence.trace) == 12
    assert kcsan.kind == "kcsan"
    assert kcsan.title == "BUG: KCSAN: data-race in htab_map_update_elem / htab_map_update_elem"
    assert kcsan.trace[0] == "htab_map_update_elem+0x2c1/0x3f0" and len(kcsan.trace) == 7
    assert {s.test for s in (kasan, ubsan, kfence, kcsan)} == {"sanitizers"}


def test_bugs_gpf_and_hard_lockup() -> None:
    splats = scan(fixture("bugs.log"))
    assert [(s.kind, s.title) for s in splats] == [
        (
            "bug",
            "BUG: sleeping function called from invalid context at kernel/locking/mutex.c:580",
        ),
        ("bug", "BUG: spinlock bad magic on CPU#1, htab_reuse/251"),
        # Its "invalid opcode: 0000 [#1]" line is the same report.
        ("bug", "kernel BUG at mm/slub.c:390!"),
        (
            "gpf",
            "general protection fault, probably for non-canonical address "
            "0xdead000000000122: 0000 [#2] PREEMPT SMP NOPTI",
        ),
        ("hard-lockup", "NMI watchdog: Watchdog detected hard LOCKUP on cpu 1"),
    ]
    assert splats[2].trace == ("<TASK>", "htab_map_free+0xe1/0x140", *splats[2].trace[2:])
    assert {s.test for s in splats} == {"bugs"}


def test_clean_boot_has_no_splats() -> None:
    text = fixture("clean_boot.log")
    # The traps the patterns must not fall into are really there.
    for innocent in (
        "RCU: Adjusting geometry",
        "rcu: Hierarchical RCU implementation.",
        "ACPI BIOS Error (bug)",
        "report a bug",
        "Spectre V2 : Mitigation",
        "clocksource: tsc-early: mask",
        "NMI watchdog: Perf NMI watchdog permanently disabled",
        "general protection fault ip:",
        "oops=panic",
        "sysrq: HELP",
    ):
        assert innocent.lower() in text.lower()
    assert scan(text) == []


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_line_endings_do_not_matter(path: Path) -> None:
    text = fixture(path.name).replace("\r\n", "\n")
    assert scan(text) == scan(text.replace("\n", "\r\n"))


# --- single lines and small cases --------------------------------------------


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b", "panic"),
        ("Kernel panic - not syncing: Hard LOCKUP", "panic"),
        # A panic whatever it names: the guest is gone (CRASH, not KERNEL-HANG).
        ("Kernel panic - not syncing: Watchdog detected hard LOCKUP on cpu 1", "panic"),
        ("Kernel panic - not syncing: softlockup: hung tasks", "panic"),
        ("kmemleak: 3 new suspected memory leaks (see /sys/kernel/debug/kmemleak)", "kmemleak"),
        ("kmemleak: 1 new suspected memory leak (see /sys/kernel/debug/kmemleak)", "kmemleak"),
        ("Oops: 0002 [#1] PREEMPT SMP NOPTI", "oops"),
        ("BUG: unable to handle page fault for address: ffffffffffffffe8", "oops"),
        ("general protection fault: 0000 [#1] SMP", "gpf"),
        ("kernel BUG at kernel/bpf/memalloc.c:187!", "bug"),
        ("BUG: scheduling while atomic: htab_reuse/212/0x00000002", "bug"),
        ("BUG: workqueue lockup - pool cpus=0 node=0 flags=0x0 nice=0 stuck for 33s!", "bug"),
        ("BUG: KMSAN: uninit-value in htab_map_update_elem+0x1d/0x40", "bug"),
        ("WARNING: CPU: 0 PID: 0 at kernel/rcu/tree.c:641 rcu_eqs_enter+0x7a/0x80", "warning"),
        ("WARNING: possible circular locking dependency detected", "warning"),
        ("watchdog: BUG: soft lockup - CPU#1 stuck for 23s! [kworker/1:2:97]", "soft-lockup"),
        ("watchdog: Watchdog detected hard LOCKUP on cpu 1", "hard-lockup"),
        ("rcu: INFO: rcu_sched self-detected stall on CPU", "rcu-stall"),
        ("rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { 1-... }", "rcu-stall"),
        ("INFO: rcu_tasks_trace detected stalls on tasks:", "rcu-stall"),
        ("INFO: rcu_tasks detected stalls on tasks:", "rcu-stall"),
        ("INFO: task htab_reuse:212 blocked for more than 122 seconds.", "hung-task"),
        ("BUG: KASAN: null-ptr-deref in bpf_map_lookup_elem+0x25/0x40", "kasan"),
        ("BUG: KFENCE: out-of-bounds write in htab_map_update_elem+0x1f/0x50", "kfence"),
        ("UBSAN: shift-out-of-bounds in kernel/bpf/verifier.c:12345:8", "ubsan"),
        ("BUG: KCSAN: data-race in __bpf_lru_list_rotate / bpf_lru_pop_free", "kcsan"),
    ],
)
def test_head_lines(line: str, kind: str) -> None:
    (splat,) = scan(f"[   42.000001] {line}\n")
    assert (splat.kind, splat.title, splat.timestamp) == (kind, line, 42.000001)
    assert splat.kind is SplatKind(kind)


@pytest.mark.parametrize(
    "line",
    [
        "RETBleed: WARNING: Spectre v2 mitigation leaves CPU vulnerable to RETBleed attacks!",
        "traps: a.out[77] general protection fault ip:401136 sp:7ffd3 error:0 in a.out[401000+1]",
        "---[ end Kernel panic - not syncing: Fatal exception ]---",
        "Kernel command line: console=ttyS0 panic=-1 oops=panic",
        "rcu: RCU calculated value of scheduler-enlistment delay is 25 jiffies.",
        "INFO: lockdep is turned off.",
        "kasan: KernelAddressSanitizer initialized",
        "hung_task: watchdog thread started",
        "test_progs: #42 bpf_bug_fix:OK",
        "Code: Unable to access opcode bytes at 0x40110c.",
    ],
)
def test_look_alike_lines_are_not_splats(line: str) -> None:
    assert scan(f"[    1.000000] {line}\n{line}\n") == []


def test_lines_without_timestamps_and_with_caller_ids() -> None:
    text = (
        "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\r\n"
        "[    3.141592][    T1] Kernel panic - not syncing: Attempted to kill init!\r\n"
    )
    first, second = scan(text)
    assert first.timestamp is None
    assert (
        first.title
        == "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"
    )
    assert (second.timestamp, second.title) == (
        3.141592,
        "Kernel panic - not syncing: Attempted to kill init!",
    )


def test_printk_record_after_a_partial_userspace_line() -> None:
    # A shell's prompt left without a newline; the kernel's record follows.
    (splat,) = scan("~ # [   12.345678] Kernel panic - not syncing: Fatal exception\n")
    assert (splat.title, splat.timestamp) == (
        "Kernel panic - not syncing: Fatal exception",
        12.345678,
    )


def test_escape_sequences_are_removed_from_titles() -> None:
    (splat,) = scan("\x1b[0m\x1b[1;31m[    2.000000] Kernel panic - not syncing: x\x1b[0m\r\n")
    assert splat.title == "Kernel panic - not syncing: x"


def test_trace_is_capped() -> None:
    frames = "".join(f"[    5.000000]  deep_{i}+0x1/0x2\n" for i in range(200))
    text = f"[    5.000000] BUG: scheduling while atomic\n[    5.000000] Call Trace:\n{frames}"
    text += "[    5.000000] next line\n"
    (splat,) = scan(text)
    assert len(splat.trace) == TRACE_LIMIT
    assert splat.trace[0] == "deep_0+0x1/0x2"


def test_arm64_style_trace_ends_at_the_first_non_frame_line() -> None:
    text = (
        "Internal error: Oops: 0000000096000005 [#1] PREEMPT SMP\n"
        "Call trace:\n"
        " htab_map_update_elem+0x1c4/0x3f0\n"
        " bpf_map_update_value+0x100/0x1a0\n"
        "SMP: stopping secondary CPUs\n"
        " not_a_frame_any_more+0x1/0x2\n"
    )
    (splat,) = scan(text)
    assert splat.kind == "oops"
    assert splat.trace == ("htab_map_update_elem+0x1c4/0x3f0", "bpf_map_update_value+0x100/0x1a0")


def test_attribution_follows_begin_and_matching_end() -> None:
    text = "\n".join(
        [
            "[1.000000] orchestrate: begin test a",
            "[1.100000] orchestrate: end test b",  # not a's end: a is still running
            "[1.200000] BUG: first",
            "[1.300000] orchestrate: begin test name with spaces",
            "[1.400000] BUG: second",
            "[1.500000] orchestrate: end test name with spaces",
            "[1.600000] BUG: third",
        ]
    )
    assert [(s.title, s.test) for s in scan(text)] == [
        ("BUG: first", "a"),
        ("BUG: second", "name with spaces"),
        ("BUG: third", None),
    ]


def test_a_marker_ends_the_report_before_it() -> None:
    text = (
        "[1.000000] orchestrate: begin test a\n"
        "[1.100000] BUG: spinlock recursion on CPU#0, a/1\n"
        "[1.200000] orchestrate: end test a\n"
        "[1.300000] Call Trace:\n"
        "[1.400000]  <TASK>\n"
    )
    (splat,) = scan(text)
    assert splat.test == "a" and splat.trace == ()


def test_empty_log() -> None:
    assert scan("") == []


# --- the watcher ---------------------------------------------------------------


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def test_watcher_holds_a_report_until_its_trace_ends(tmp_path: Path) -> None:
    data = fixture("soft_lockup.log").encode()
    log = tmp_path / "console.log"
    watcher = ConsoleWatcher(log)
    assert watcher.poll() == []  # QEMU has not created the file yet
    cuts = [
        data.index(b"soft lockup - CPU#0"),  # inside the head line
        data.index(b"htab_lock_bucket") + 4,  # inside the trace, mid-line
        data.index(b"</TASK>") + 3,  # inside the line that ends the trace
        data.index(b"native_queued", data.index(b"<IRQ>")),  # inside the panic's registers
        len(data),
    ]
    got: list[list[Splat]] = []
    start = 0
    for cut in cuts:
        append(log, data[start:cut])
        start = cut
        got.append(watcher.poll())
    lockup, panic = scan(data.decode())
    assert got == [[], [], [], [lockup], [panic]]
    assert watcher.flush() == []
    assert watcher.all() == [lockup, panic]


def test_watcher_emits_a_bare_trace_once_a_non_frame_line_arrives(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    watcher = ConsoleWatcher(log)
    append(log, b"BUG: KCSAN: data-race in a / b\n\nwrite to 0x1 of 8 bytes by task 1 on cpu 0:\n")
    append(log, b" a+0x1/0x2\n b+0x3/0x4\n")
    assert watcher.poll() == []  # the next line may still be a frame
    append(log, b"\n")
    (splat,) = watcher.poll()
    assert splat.trace == ("a+0x1/0x2", "b+0x3/0x4")
    assert watcher.poll() == []


@pytest.mark.parametrize("seed", range(8))
def test_watcher_in_random_chunks_matches_scan(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    data = b"".join(path.read_bytes() for path in FIXTURES)
    log = tmp_path / "console.log"
    watcher = ConsoleWatcher(log)
    got: list[Splat] = []
    start = 0
    while start < len(data):
        end = min(len(data), start + rng.randint(1, 4000))
        append(log, data[start:end])
        start = end
        got += watcher.poll()
    got += watcher.flush()
    expected = scan(data.decode())
    assert len(expected) == 23
    assert got == expected  # each splat exactly once, complete, in order


def test_watcher_flush_takes_the_unterminated_last_line(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"[    1.000000] orchestrate: begin test t\n[    2.000000] Kernel panic - not")
    watcher = ConsoleWatcher(log)
    assert watcher.poll() == []
    append(log, b" syncing: Fatal exception")
    assert watcher.poll() == []
    (panic,) = watcher.flush()
    assert panic == Splat(
        SplatKind.PANIC, "Kernel panic - not syncing: Fatal exception", 2.0, (), "t"
    )
    assert watcher.poll() == []


def test_watcher_decodes_split_and_broken_bytes(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    watcher = ConsoleWatcher(log)
    line = "[    1.000000] orchestrate: begin test café\n".encode()
    cut = line.index(b"\xa9")  # between the two bytes of "é"
    append(log, line[:cut])
    assert watcher.poll() == []
    append(log, line[cut:] + b"[    2.000000] BUG: bad \xff byte\n")
    assert watcher.poll() == []  # its trace may still come
    (splat,) = watcher.flush()
    assert splat.test == "café"
    assert splat.title == "BUG: bad \ufffd byte"


def test_watcher_seen_and_tail(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    watcher = ConsoleWatcher(log)
    assert not watcher.seen("ORCHESTRATE-READY")
    boot = fixture("clean_boot.log").encode()
    append(log, boot[: boot.index(b"Run /init")])
    assert not watcher.seen("ORCHESTRATE-READY")
    append(log, b"Run /init as init process\r\ninit: eth0 up\r\nORCHESTRATE-RE")
    assert not watcher.seen("ORCHESTRATE-READY")
    append(log, b"ADY\r\n[    9.000000] last line\r\n")
    assert watcher.seen("ORCHESTRATE-READY")
    assert watcher.seen("ORCHESTRATE-READY")  # still true on the next call
    assert watcher.tail(3) == "init: eth0 up\nORCHESTRATE-READY\n[    9.000000] last line"
    # The firmware's escape sequences do not reach reports.
    assert "\x1b" not in watcher.tail(1000) and "SeaBIOS" in watcher.tail(1000)
    assert watcher.tail(0) == ""
    append(log, b"partial")
    assert watcher.tail(1) == "partial"


def test_watcher_restarts_when_the_file_is_truncated(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"[    1.000000] BUG: first boot\n" + b"x" * 100 + b"\n")
    watcher = ConsoleWatcher(log)
    assert [s.title for s in watcher.poll()] == []  # still open: a trace may follow
    log.write_bytes(b"[    1.000000] BUG: second boot\n")
    assert [s.title for s in watcher.poll()] == ["BUG: first boot"]
    assert [s.title for s in watcher.flush()] == ["BUG: second boot"]


def test_oom_report_is_a_splat() -> None:
    """A real OOM from a reuse-after-rcu-gp guest under map_perf (4 KB values)."""
    text = (Path(__file__).parent / "data" / "console" / "oom.log").read_text()
    ooms = [s for s in scan(text) if s.kind == "oom"]
    assert ooms, scan(text)
    assert ooms[0].title.startswith("map_perf invoked oom-killer: gfp_mask=0x500cc2")
    assert ooms[0].test == "map_perf_4096@4"
    assert any("out_of_memory" in frame for frame in ooms[0].trace)


def test_splat_kinds_are_words_in_the_results_json() -> None:
    (splat,) = scan("[    2.000000] Kernel panic - not syncing: Fatal exception\n")
    data = results.to_data(splat)
    assert data["kind"] == "panic" and type(data["kind"]) is str
    assert results.from_data(Splat, data) == splat
    assert results.from_data(Splat, data).kind is SplatKind.PANIC


# --- bounds: counting splats ----------------------------------------------------


def warn(n: int, line: int = 10) -> str:
    """A WARN() report as 6.1 prints it, from a source line of choice."""
    return (
        f"[   {n}.000000] WARNING: CPU: 1 PID: {100 + n} at kernel/bpf/x.c:{line} f+0x1/0x2\n"
        "[   1.000000] Call Trace:\n[   1.000000]  <TASK>\n"
        "[   1.000000]  f+0x1/0x2\n[   1.000000]  </TASK>\n"
    )


def test_identical_reports_are_one_splat_with_a_count() -> None:
    text = "orchestrate: begin test t\n" + warn(1) * 1000
    (splat,) = scan(text)
    assert (splat.kind, splat.count, splat.test) == (SplatKind.WARNING, 1000, "t")
    assert splat.timestamp == 1.0  # the first one's
    # A different trace, title or test is another splat.
    other = text + warn(1).replace("f+0x1", "g+0x1") + "orchestrate: begin test u\n" + warn(1)
    assert [s.count for s in scan(other)] == [1000, 1, 1]


def test_a_test_keeps_its_first_distinct_splats_and_counts_the_rest() -> None:
    storm = "".join(warn(1, line) for line in range(30)) * 3
    text = f"orchestrate: begin test t\n{storm}[   9.000000] Kernel panic - not syncing: boom\n"
    splats = scan(text)
    warnings, (summary, panic) = splats[:SPLATS_PER_TEST], splats[SPLATS_PER_TEST:]
    assert all(s.kind == "warning" and s.count == 3 for s in warnings)
    assert all(f"x.c:{i} " in s.title for i, s in enumerate(warnings))  # the first 20
    assert summary.kind == "warning" and summary.count == 10 * 3 and console.is_summary(summary)
    assert summary.title.startswith("orchestrate: further warning reports, not kept")
    assert summary.test == "t" and summary.trace == ()
    # The first splat of a kind is kept whatever came before: the panic shows.
    assert panic.kind == "panic" and panic.title == "Kernel panic - not syncing: boom"


def test_the_tally_is_bounded_whatever_the_test_names() -> None:
    tally = SplatTally(per_test=2, total=5)
    for i in range(1000):
        tally.add(Splat(SplatKind.BUG, f"BUG: {i}", None, (), test=f"t{i}"))
    assert len(tally) <= 2 * 5 + len(SplatKind)
    assert sum(s.count for s in tally.splats()) == 1000


def test_merge_caps_one_tests_splats_and_adds_counts() -> None:
    splats = [Splat(SplatKind.WARNING, f"WARNING: {i % 25}", None, (), "t", 2) for i in range(50)]
    merged = console.merge(splats, limit=20)
    assert len(merged) == 21 and [s.count for s in merged[:20]] == [4] * 20
    assert console.is_summary(merged[20]) and merged[20].count == 5 * 4
    # Merging again changes nothing: summaries add up with summaries.
    assert console.merge(merged + merged, limit=20) == tuple(
        dataclasses.replace(s, count=2 * s.count) for s in merged
    )


def test_kmemleak_is_reported_at_once() -> None:
    watcher = ConsoleWatcher()
    watcher.feed(b"[  600.100000] kmemleak: 2 new suspected memory leaks (see /sys/k)\n")
    (splat,) = watcher.poll()  # one line: no trace to wait for
    assert splat.kind is SplatKind.KMEMLEAK and splat.timestamp == 600.1


# --- bounds: the watcher ----------------------------------------------------------


def test_a_huge_unterminated_line_is_bounded_and_markers_in_it_are_found() -> None:
    watcher = ConsoleWatcher()
    assert not watcher.seen("ORCHESTRATE-READY")
    chunk = b"x" * 65536
    for _ in range(512):  # 32 MiB without a newline
        watcher.feed(chunk)
        assert not watcher.seen("ORCHESTRATE-READY")
    assert watcher._partial_len <= 2 * MAX_LINE
    watcher.feed(b"ORCHESTRATE-RE")
    assert not watcher.seen("ORCHESTRATE-READY")
    watcher.feed(b"ADY")  # split across two reads, still no newline
    assert watcher.seen("ORCHESTRATE-READY")
    assert len(watcher.tail(1)) <= 2 * MAX_LINE


def test_a_printk_record_after_a_huge_partial_line_is_still_a_splat() -> None:
    junk = "y" * (10 * MAX_LINE)
    (splat,) = scan(f"{junk}[   3.000000] BUG: after junk\n")
    assert (splat.title, splat.timestamp) == ("BUG: after junk", 3.0)


def test_markers_are_found_after_a_flood_of_lines() -> None:
    watcher = ConsoleWatcher()
    watcher.feed(b"orchestrate: begin test early\n")
    assert not watcher.seen("orchestrate: end test early")  # looked for from now on
    watcher.feed(b"spam\n" * (10 * TAIL_LINES) + b"orchestrate: end test early\n")
    watcher.feed(b"spam\n" * (10 * TAIL_LINES))
    assert watcher.seen("orchestrate: end test early")
    # Asked only after it scrolled out of the kept lines: not seen (bounded memory).
    assert not watcher.seen("orchestrate: begin test early")
    assert len(watcher.tail(10**6).splitlines()) == TAIL_LINES


def test_titles_and_trace_lines_are_cut() -> None:
    long = "z" * (MAX_LINE - 100)
    (splat,) = scan(f"BUG: {long}\nCall Trace:\n a{long}+0x1/0x2\n")
    assert len(splat.title) == console.FIELD_LIMIT
    assert len(splat.trace[0]) == console.FIELD_LIMIT


# --- bounds: the capped log -----------------------------------------------------


def split_capped(data: bytes) -> tuple[bytes, int, bytes]:
    head, _, rest = data.partition(b"[orchestrate: ")
    number, _, tail = rest.partition(b" bytes dropped here]\n")
    return head, int(number), tail


@pytest.mark.parametrize("seed", range(6))
def test_capped_log_keeps_head_and_tail_and_counts_the_rest(seed: int) -> None:
    rng = random.Random(seed)
    lines = [f"line {i} {'x' * rng.randint(0, 60)}\n".encode() for i in range(5000)]
    data = b"".join(lines)
    log = CappedLog(io.BytesIO(), head=2000, tail=3000, slack=rng.choice([64, 500, 4000]))
    start = 0
    while start < len(data):
        end = start + rng.randint(1, 3000)
        log.write(data[start:end])
        start = end
        assert len(log.stream.getvalue()) <= 2000 + 3000 + log.slack + 64  # type: ignore[attr-defined]
    log.finish()
    head, dropped, tail = split_capped(log.stream.getvalue())  # type: ignore[attr-defined]
    assert (log.written, log.dropped) == (len(data), dropped)
    assert len(head) + dropped + len(tail) == len(data)
    assert data.startswith(head) and data.endswith(tail)
    # Cut at lines: the head ends one, the tail starts one.
    assert head.endswith(b"\n") and tail.startswith(b"line ")
    assert 2000 - console._ALIGN <= len(head) <= 2000 and 3000 - 100 <= len(tail) <= 3000


def test_capped_log_small_enough_is_untouched(tmp_path: Path) -> None:
    with CappedLog.open(tmp_path / "log", head=10, tail=10) as log:
        log.write(b"0123456789abcdefghij" + b"k" * 60)
    assert (tmp_path / "log").read_bytes() == b"0123456789abcdefghij" + b"k" * 60
    with CappedLog.open(tmp_path / "log", head=10, tail=10) as log:
        log.write(b"0123456789" + b"-" * 1000 + b"abcdefghij")
    assert (tmp_path / "log").read_bytes() == (
        b"0123456789\n[orchestrate: 1000 bytes dropped here]\nabcdefghij"
    )


# --- bounds: the console capture (QEMU's FIFO) ------------------------------------


def test_capture_reads_the_fifo_into_a_capped_log_and_the_watcher(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    watcher = ConsoleWatcher()
    capture = ConsoleCapture(log, watcher, head=64 * 1024, tail=256 * 1024, slack=128 * 1024)
    pipe = capture.start()
    assert pipe == console.pipe_path(log) and pipe.is_fifo()
    assert not capture.wait_closed(0.2)  # no writer yet: nothing to report
    spam = b"[    1.000000] spam spam spam\r\n" * 1000
    with open(pipe, "ab") as qemu:  # as QEMU's file chardev opens it
        qemu.write(b"[    0.100000] Linux version 6.1\r\n")
        for _ in range(100):  # ~3 MiB, a splat in the middle
            qemu.write(spam)
        qemu.write(b"orchestrate: begin test t\n" + warn(5).encode() * 3)
        for _ in range(100):
            qemu.write(spam)
        qemu.write(b"ORCHESTRATE-READY\r\n")
    assert capture.wait_closed(10)
    capture.stop()
    assert not pipe.exists()
    (splat,) = watcher.all()
    assert (splat.kind, splat.count, splat.test) == ("warning", 3, "t")
    assert watcher.seen("ORCHESTRATE-READY")
    data = log.read_bytes()
    head, dropped, tail = split_capped(data)
    assert len(data) <= (64 + 256) * 1024 + 64
    assert head.startswith(b"[    0.100000] Linux version 6.1")
    assert tail.endswith(b"ORCHESTRATE-READY\r\n")
    assert len(head) + dropped + len(tail) == watcher.received == capture.written


def test_capture_stop_without_a_writer(tmp_path: Path) -> None:
    capture = ConsoleCapture(tmp_path / "console.log", ConsoleWatcher())
    pipe = capture.start()
    capture.stop()
    capture.stop()  # idempotent
    assert not pipe.exists() and (tmp_path / "console.log").read_bytes() == b""
