"""A guest that floods orchestrate: its console, a test's output, a WARN storm.

    python benchmarks/console_flood.py [--gib 2] [--output-mib 1024] [--warns 20000]
                                       [--uncapped]

No kernel boots here: synthetic producers drive the real code.

1. Console: the real Machine (vm/qemu.py, vm/console.py) starts a stand-in
   for QEMU that opens the console FIFO as QEMU's file chardev does and
   writes --gib GiB of printk-like text into it, as fast as orchestrate reads
   it (QEMU's own pace, a serial port, is slower): the ready marker first,
   then a test's begin marker, a WARN every 64 MiB, a 32 MiB line without a
   newline halfway, the end marker.  Meanwhile orchestrate does what the
   test runner does every 20 ms: alive() (a search for the panic line) and
   seen() of a marker.  Measured: orchestrate's RSS (psutil, every 50 ms,
   the process having imported all of orchestrate as the CLI does), the
   longest alive()/seen() call, the throughput, the logs' size on disk and
   that the WARNs were found (one splat, counted).
2. A test's output: SshTransport.run with the SSH channel replaced by one
   that prints --output-mib MiB to stdout and a quarter of it to stderr,
   through the real _exec/_pump into the capped files.
3. A WARN storm: --warns WARN reports (4 CPUs x 10 tasks x 50 places) in one
   test, read by the real ConsoleWatcher, attached by the real run_test (a
   fake session), rendered by orchestrator.report.write_reports.  With
   --uncapped the same storm is also rendered with every report kept, as
   before the cap.

Goals: the console flood costs orchestrate <= 100 MiB RSS (peak minus what
the process held before) and <= 20 MiB of logs; the storm yields
report.html <= 2 MB and junit.xml <= 2 MB.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

import orchestrator.cli  # noqa: F401  (the whole tool in memory, as when it runs)
from orchestrator.matrix import Test
from orchestrator.report import FILES, write_reports
from orchestrator.results import (
    BootInfo,
    RunResult,
    Splat,
    Stage,
    StageResult,
    Status,
    TestResult,
    VariantResult,
)
from orchestrator.vm import console, qemu, run_test, ssh

MiB = 1024 * 1024
MB = 1000 * 1000

# Writes what the benchmark says into the console FIFO, serves QMP quit.
FAKE_QEMU = textwrap.dedent(
    """\
    import json, os, socket, sys
    args = sys.argv[1:]
    fifo = args[args.index("-chardev") + 1].split("path=", 1)[1]
    qmp = args[args.index("-qmp") + 1][len("unix:"):].split(",")[0]
    total = int(os.environ["FLOOD_BYTES"])
    server = socket.socket(socket.AF_UNIX)
    server.bind(qmp)
    server.listen(1)
    out = open(fifo, "ab", buffering=0)  # as QEMU's file chardev opens it
    out.write(b"[    0.000000] Linux version 6.1.0 (flood)\\r\\n")
    out.write(b"orchestrate: init start\\r\\nORCHESTRATE-READY\\r\\n")
    out.write(b"[    1.000000] orchestrate: begin test flood\\r\\n")
    block = b"".join(
        b"[%5d.%06d] bpf_flood: cpu %d map %08x value %016x ok\\r\\n"
        % (i // 1000, i % 1000 * 997, i % 4, i * 2654435761 % 2**32, i * 40503 % 2**64)
        for i in range(16384)
    )
    warn = (
        b"[   10.000000] WARNING: CPU: 1 PID: 77 at kernel/bpf/hashtab.c:1130 "
        b"htab_map_update_elem+0x3a/0x90\\r\\n"
        b"[   10.000000] Modules linked in:\\r\\n"
        b"[   10.000000] Call Trace:\\r\\n"
        b"[   10.000000]  <TASK>\\r\\n"
        b"[   10.000000]  bpf_map_update_value+0x10e/0x160\\r\\n"
        b"[   10.000000]  map_update_elem+0x19b/0x2a0\\r\\n"
        b"[   10.000000]  __sys_bpf+0x8b5/0x1a40\\r\\n"
        b"[   10.000000]  </TASK>\\r\\n"
    )
    written, next_warn, long_line = 0, 64 << 20, total // 2
    while written < total:
        if written >= next_warn:
            out.write(warn)
            next_warn += 64 << 20
        if long_line is not None and written >= long_line:
            for _ in range(32 << 4):  # 32 MiB, no newline
                out.write(b"x" * (64 << 10))
            out.write(b"\\r\\n")
            written += 32 << 20
            long_line = None
        out.write(block)
        written += len(block)
    out.write(b"[   99.000000] orchestrate: end test flood\\r\\nflood done\\r\\n")
    while True:
        conn, _ = server.accept()
        stream = conn.makefile("rwb")
        stream.write(b'{"QMP": {}}\\n')
        stream.flush()
        for line in stream:
            stream.write(b'{"return": {}}\\n')
            stream.flush()
            if json.loads(line)["execute"] == "quit":
                sys.exit(0)
    """
)


class PeakRss:
    """Samples this process's RSS every 50 ms while the block runs."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.before = self.process.memory_info().rss
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.process.memory_info().rss)


def goal(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def du(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.exists())


# --- 1. the console ------------------------------------------------------------


def console_flood(work: Path, gib: float) -> bool:
    script = work / "fake-qemu"
    script.write_text(f"#!{sys.executable}\n{FAKE_QEMU}")
    script.chmod(0o755)
    arch = dataclasses.replace(qemu.X86_64, name="flood", qemu=str(script))
    logs = work / "logs"
    spec = qemu.VmSpec(
        kernel=Path("/nonexistent/vmlinux"), initrd=Path("/nonexistent/initrd"), cpus=2,
        memory_mb=512, accel=qemu.Accel.TCG, cmdline_extra="",
        console_log=logs / "console-1.log", qmp_socket=work / "qmp.sock", ssh_port=10022,
    )  # fmt: skip
    total = int(gib * 1024 * MiB)
    os.environ["FLOOD_BYTES"] = str(total)
    calls: list[float] = []
    with PeakRss() as rss:
        start = time.monotonic()
        with qemu.Machine(spec, boot_timeout=60, arch=arch) as vm:
            while True:
                t = time.perf_counter()
                alive = vm.alive()
                done = vm.console.seen("flood done")
                vm.console.poll()
                calls.append(time.perf_counter() - t)
                if done or not alive:
                    break
                time.sleep(qemu.POLL_INTERVAL)
            seconds = time.monotonic() - start
            read = vm.console.received
            splats = vm.console.all()
        log_files = sorted(logs.iterdir())
    log_bytes = du(log_files)
    cost = rss.peak - rss.before
    warns = total // (64 * MiB) - (1 if total % (64 * MiB) == 0 else 0)
    found = [(str(s.kind), s.count, s.test) for s in splats]
    print("1. console flood through the Machine's FIFO, watcher and capped log")
    print(f"   guest wrote        {read / MiB:10.1f} MiB in {seconds:.1f} s "
          f"({read / MiB / seconds:.1f} MiB/s, all of it scanned)")  # fmt: skip
    print(f"   RSS before/peak    {rss.before / MiB:10.1f} / {rss.peak / MiB:.1f} MiB "
          f"(cost {cost / MiB:.1f} MiB)   goal <= 100 MiB: {goal(cost <= 100 * MiB)}")  # fmt: skip
    for f in log_files:
        print(f"   {f.name:18} {f.stat().st_size / MiB:10.2f} MiB")
    print(f"   logs on disk       {log_bytes / MiB:10.2f} MiB   "
          f"goal <= 20 MiB: {goal(log_bytes <= 20 * MiB)}")  # fmt: skip
    calls.sort()
    p50, p99, most = (calls[int(q * (len(calls) - 1))] * 1000 for q in (0.5, 0.99, 1.0))
    print(f"   alive()+seen()+poll() every 20 ms, {len(calls)} times: median {p50:.2f} ms, "
          f"99th percentile {p99:.2f} ms, max {most:.1f} ms")  # fmt: skip
    print(f"   splats found       {found} (expected [('warning', {warns}, 'flood')])")
    return cost <= 100 * MiB and log_bytes <= 20 * MiB and found == [("warning", warns, "flood")]


# --- 2. a test's output --------------------------------------------------------


class FloodChannel:
    """An SSH channel whose command prints `out` bytes to stdout and out/4 to stderr."""

    def __init__(self, out: int) -> None:
        line = b"".join(b"%015d\n" % i for i in range(2048))  # 32 KiB
        self._chunk = line
        self._left = [out, out // 4]
        self.closed = False
        self.eof_received = False
        self._read, self._write = os.pipe()

    def fileno(self) -> int:
        return self._read

    def recv_ready(self) -> bool:
        return self._left[0] > 0

    def recv_stderr_ready(self) -> bool:
        return self._left[1] > 0

    def recv(self, size: int) -> bytes:
        return self._take(0)

    def recv_stderr(self, size: int) -> bytes:
        return self._take(1)

    def _take(self, stream: int) -> bytes:
        self._left[stream] -= len(self._chunk)
        self.eof_received = self._left[0] <= 0 and self._left[1] <= 0
        return self._chunk

    def exit_status_ready(self) -> bool:
        return self.eof_received

    def recv_exit_status(self) -> int:
        return 0

    def settimeout(self, timeout: float) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._read)
            os.close(self._write)


def test_output(work: Path, mib: int) -> bool:
    transport = ssh.SshTransport(None)  # type: ignore[arg-type]
    transport._open = lambda command, timeout: FloodChannel(mib * MiB)  # type: ignore[assignment,method-assign,return-value]
    out, err = work / "flood.stdout", work / "flood.stderr"
    with PeakRss() as rss:
        start = time.monotonic()
        result = transport.run("flood", timeout=600, stdout=out, stderr=err)
        seconds = time.monotonic() - start
    sizes = out.stat().st_size, err.stat().st_size
    cap = ssh.OUTPUT_HEAD + ssh.OUTPUT_TAIL + 64
    ok = result.ok and max(sizes) <= cap
    print("2. a test's output through SshTransport.run (fake channel) into capped files")
    print(f"   test printed       {mib:10d} MiB stdout + {mib // 4} MiB stderr in {seconds:.1f} s")
    print(f"   files on disk      {sizes[0] / MiB:10.2f} MiB stdout, {sizes[1] / MiB:.2f} MiB "
          f"stderr (cap {cap / MiB:.2f} MiB each): {goal(ok)}")  # fmt: skip
    print(f"   RSS cost           {(rss.peak - rss.before) / MiB:10.1f} MiB")
    return ok


# --- 3. a WARN storm -----------------------------------------------------------


def storm_console(warns: int) -> Iterator[bytes]:
    yield b"[    1.000000] orchestrate: begin test storm\r\n"
    for i in range(warns):
        cpu, pid, place = i % 4, 100 + i % 10, i % 50
        yield (
            f"[{10 + i // 1000:5d}.{i % 1000 * 1000:06d}] WARNING: CPU: {cpu} PID: {pid} at "
            f"kernel/bpf/memalloc.c:{200 + place} unit_free+0x{place:x}/0x90\r\n"
            f"[   10.000000] Modules linked in:\r\n"
            f"[   10.000000] CPU: {cpu} PID: {pid} Comm: htab_reuse Not tainted 6.1.0 #1\r\n"
            f"[   10.000000] RIP: 0010:unit_free+0x{place:x}/0x90\r\n"
            "[   10.000000] Call Trace:\r\n[   10.000000]  <TASK>\r\n"
            + "".join(f"[   10.000000]  frame_{k}+0x{place:x}/0x40\r\n" for k in range(12))
            + "[   10.000000]  </TASK>\r\n[   10.000000] ---[ end trace 0000000000000000 ]---\r\n"
        ).encode()
    yield b"[   99.000000] orchestrate: end test storm\r\n"


@dataclasses.dataclass
class StormSession:
    """run_test's view of a guest whose console held the storm."""

    watcher: console.ConsoleWatcher

    def run(self, command: str, *, timeout: float, stdout: Path, stderr: Path) -> ssh.ExecResult:
        stdout.write_text("KTAP version 1\n1..1\nok 1 storm\n")
        stderr.write_text("")
        return ssh.ExecResult(0, False, 1.0)

    def ping(self, timeout: float = 5.0) -> bool:
        return True

    def kmsg(self, text: str) -> None:
        pass

    def alive(self) -> bool:
        return True

    def splats(self) -> list[Splat]:
        return self.watcher.all()

    def sshd_gone(self) -> bool:
        return False

    def qemu_killed(self) -> str | None:
        return None

    def console_tail(self) -> str:
        return self.watcher.tail()


def storm_run(result: TestResult, logs: Path) -> RunResult:
    stages = tuple(
        StageResult(stage, Status.PASS) for stage in (Stage.APPLY, Stage.KCONFIG, Stage.BUILD)
    )
    stages += (
        StageResult(Stage.BOOT, Status.PASS, "tcg, SSH ready in 1.5s"),
        StageResult(Stage.TEST, Status.FAIL, result.reason),
    )
    boot = BootInfo("tcg", "benchmark", 1.5, str(logs / "console-1.log"))
    variant = VariantResult("storm", stages, boot=boot, tests=(result,))
    return RunResult("storm.yaml", "2024-01-01T00:00:00", "2024-01-01T00:10:00", (variant,))


def warn_storm(work: Path, warns: int, uncapped: bool) -> bool:
    logs = work / "storm" / "logs"
    logs.mkdir(parents=True)
    watcher = console.ConsoleWatcher()
    raw: list[Splat] = []
    scanner = console._Scanner(raw.append)  # every report, as kept before the cap
    for data in storm_console(warns):
        watcher.feed(data)
        if uncapped:
            scanner.feed_block(console.clean(data.decode().rstrip("\n")))
    watcher.flush()
    scanner.finish()
    test = Test(name="storm", kind="ktap", command="/opt/storm", timeout=10)
    result = run_test.run_test(StormSession(watcher), test, logs / "tests")
    print(f"3. a storm of {warns} WARN reports in one test")
    print(f"   verdict            {result.verdict.value}: {result.reason[:60]}")
    print(f"   splats attached    {len(result.splats)} "
          f"(counting {sum(s.count for s in result.splats)} reports)")  # fmt: skip
    ok = True
    runs = [("capped", result)]
    if uncapped:
        runs.append(("uncapped (before)", dataclasses.replace(result, splats=tuple(raw))))
    for name, res in runs:
        out = work / "storm" / name.split()[0]
        write_reports(storm_run(res, logs), out, FILES, run_dir=work / "storm")
        html, junit = (out / FILES["html"]).stat().st_size, (out / FILES["junit"]).stat().st_size
        text = (out / FILES["text"]).stat().st_size
        print(f"   {name:18} report.html {html / MB:.3f} MB, junit.xml {junit / MB:.3f} MB, "
              f"summary.txt {text / 1000:.1f} kB")  # fmt: skip
        if name == "capped":
            ok = html <= 2 * MB and junit <= 2 * MB
            print(f"   goal report.html <= 2 MB and junit.xml <= 2 MB: {goal(ok)}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--gib", type=float, default=2.0, help="GiB the guest writes to its console"
    )
    parser.add_argument("--output-mib", type=int, default=1024, help="MiB a test prints to stdout")
    parser.add_argument("--warns", type=int, default=20_000)
    parser.add_argument("--uncapped", action="store_true", help="also render the storm uncapped")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flood-") as tmp:
        work = Path(tmp)
        results = [
            console_flood(work, args.gib),
            test_output(work, args.output_mib),
            warn_storm(work, args.warns, args.uncapped),
        ]
    print("all goals met" if all(results) else "SOME GOALS NOT MET")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
