"""QEMU argv (golden), QMP against a fake server, Machine against a fake QEMU,
and the accelerator probe's cache.  No real QEMU here: see tests/e2e/test_guest.py."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from orchestrator.vm import console, qemu
from orchestrator.vm.qemu import BootFailed, Machine, QmpError, VmSpec


@pytest.fixture()
def short_dir() -> Iterator[Path]:
    """A directory with a short path: unix socket paths are limited to 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="orch-") as tmp:
        yield Path(tmp)


def make_spec(directory: Path, accel: qemu.Accel = qemu.Accel.TCG, extra: str = "") -> VmSpec:
    return VmSpec(
        kernel=Path("/k/vmlinux"),
        initrd=Path("/k/initrd"),
        cpus=2,
        memory_mb=512,
        accel=accel,
        cmdline_extra=extra,
        console_log=directory / "console.log",
        qmp_socket=directory / "qmp.sock",
        ssh_port=10022,
    )


CMDLINE = (
    "console=ttyS0 panic=-1 loglevel=5 printk.devkmsg=on printk.time=1"
    " random.trust_cpu=on rdinit=/init"
)


def golden(accel_args: list[str], extra: str = "") -> list[str]:
    return [
        "qemu-system-x86_64",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-machine", "q35",
        *accel_args,
        "-smp", "2", "-m", "512",
        "-kernel", "/k/vmlinux", "-initrd", "/k/initrd",
        "-append", CMDLINE + extra,
        "-chardev", "file,id=console,path=/d/console.log.pipe",
        "-serial", "chardev:console",
        "-qmp", "unix:/d/qmp.sock,server=on,wait=off",
        "-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:10022-:22",
        "-device", "virtio-net-pci,netdev=net0",
    ]  # fmt: skip


def test_argv_tcg_golden() -> None:
    args = qemu.argv(make_spec(Path("/d")))
    assert args == golden(["-accel", "tcg,thread=multi", "-cpu", "max"])
    assert all(isinstance(a, str) for a in args)


def test_argv_kvm_golden() -> None:
    args = qemu.argv(make_spec(Path("/d"), accel=qemu.Accel.KVM))
    assert args == golden(["-accel", "kvm", "-cpu", "host"])


def test_argv_extra_cmdline_comes_last_and_no_shell_is_involved() -> None:
    args = qemu.argv(make_spec(Path("/d"), extra="  rdinit=/bin/sh   init=/x "))
    assert args == golden(["-accel", "tcg,thread=multi", "-cpu", "max"], " rdinit=/bin/sh init=/x")
    assert not {"sh", "bash", "-c"} & set(args)
    # hostfwd listens on loopback only, and nothing else is forwarded.
    forwards = [a for a in args if "hostfwd" in a]
    assert forwards == ["user,id=net0,hostfwd=tcp:127.0.0.1:10022-:22"]


def test_argv_paths_with_spaces_stay_one_element(tmp_path: Path) -> None:
    spec = make_spec(tmp_path / "my dir")
    args = qemu.argv(spec)
    assert f"file,id=console,path={tmp_path}/my dir/console.log.pipe" in args


def test_a_pinned_guest_starts_behind_taskset() -> None:
    spec = dataclasses.replace(make_spec(Path("/d")), host_cpus=(1, 3))
    assert qemu.launch_argv(spec) == ["taskset", "--cpu-list", "1,3", *qemu.argv(spec)]
    assert qemu.launch_argv(make_spec(Path("/d"))) == qemu.argv(make_spec(Path("/d")))


def test_spec_takes_a_plain_word_as_its_accel() -> None:
    spec = make_spec(Path("/d"), accel="kvm")  # type: ignore[arg-type]
    assert spec.accel is qemu.Accel.KVM and qemu.ACCELS == ("kvm", "tcg")


def test_spec_rejects_bad_accel_and_long_socket_path() -> None:
    with pytest.raises(ValueError, match="accel"):
        make_spec(Path("/d"), accel="hvf")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="107 bytes"):
        make_spec(Path("/" + "x" * 120))


def test_free_port_is_bindable_on_loopback() -> None:
    port = qemu.free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# --- QMP ---------------------------------------------------------------------


class FakeQmp:
    """A QMP server thread: greeting, then one reply per command line."""

    def __init__(self, path: Path, replies: dict[str, dict[str, Any]] | None = None) -> None:
        self.path = path
        self.replies = replies or {}
        self.commands: list[str] = []
        self.greet = True
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(4)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with conn, conn.makefile("rwb") as stream:
                self._session(stream)

    def _session(self, stream: Any) -> None:
        if not self.greet:
            time.sleep(5)
            return
        stream.write(b'{"QMP": {"version": {}, "capabilities": []}}\r\n')
        stream.flush()
        for line in stream:
            command = json.loads(line)["execute"]
            self.commands.append(command)
            # An asynchronous event first: the client must skip it.
            stream.write(b'{"event": "SOMETHING", "data": {}}\r\n')
            reply = self.replies.get(command, {"return": {}})
            stream.write(json.dumps(reply).encode() + b"\r\n")
            stream.flush()
            if command == "quit":
                return

    def close(self) -> None:
        self._server.close()


@pytest.fixture()
def fake_qmp(short_dir: Path) -> Iterator[FakeQmp]:
    server = FakeQmp(short_dir / "qmp.sock", {"query-status": {"return": {"status": "running"}}})
    yield server
    server.close()


def test_qmp_negotiates_capabilities_then_runs_the_command(fake_qmp: FakeQmp) -> None:
    reply = qemu.qmp_command(fake_qmp.path, "query-status")
    assert reply == {"return": {"status": "running"}}
    assert qemu.qmp_command(fake_qmp.path, "quit") == {"return": {}}
    assert fake_qmp.commands == ["qmp_capabilities", "query-status", "qmp_capabilities", "quit"]


def test_qmp_error_reply_raises(fake_qmp: FakeQmp) -> None:
    fake_qmp.replies["bogus"] = {"error": {"class": "CommandNotFound", "desc": "no"}}
    with pytest.raises(QmpError, match="CommandNotFound"):
        qemu.qmp_command(fake_qmp.path, "bogus")


def test_qmp_without_server_or_greeting_fails_fast(fake_qmp: FakeQmp, short_dir: Path) -> None:
    with pytest.raises(QmpError):
        qemu.qmp_command(short_dir / "nothing.sock", "quit")
    fake_qmp.greet = False
    start = time.monotonic()
    with pytest.raises(QmpError):
        qemu.qmp_command(fake_qmp.path, "quit", timeout=0.3)
    assert time.monotonic() - start < 2


# --- Machine against a fake QEMU ---------------------------------------------

# Parses the real argv, writes the console, serves QMP quit, then does what
# the test says: "ready" (marker, run until quit), "panic" (exit like a
# panicked guest), "silent" (nothing, forever), "refuse" (QEMU's own error),
# "late-panic" (ready, then a panic once the file "panic-now" exists, QEMU
# still running), "port-taken" (QEMU's hostfwd error while the file
# "port-taken" holds a number > 0, which it counts down; then ready),
# "flood" (ready, then FAKE_QEMU_FLOOD MiB of console with a WARN inside).
FAKE_QEMU = textwrap.dedent(
    """\
    import json, os, socket, sys, time
    args = sys.argv[1:]
    mode = os.environ["FAKE_QEMU_MODE"]
    console = args[args.index("-chardev") + 1].split("path=", 1)[1]
    qmp = args[args.index("-qmp") + 1][len("unix:"):].split(",")[0]
    here = os.path.dirname(qmp)
    if mode == "refuse":
        print("fake-qemu: Error loading uncompressed kernel without PVH ELF Note",
              file=sys.stderr)
        sys.exit(1)
    if mode == "port-taken":
        taken = os.path.join(here, "port-taken")
        left = int(open(taken).read())
        if left > 0:
            open(taken, "w").write(str(left - 1))
            netdev = args[args.index("-netdev") + 1]
            rule = netdev.split("hostfwd=", 1)[1]
            print(f"qemu: -netdev {netdev}: Could not set up host forwarding rule '{rule}'",
                  file=sys.stderr)
            sys.exit(1)
    server = socket.socket(socket.AF_UNIX)
    server.bind(qmp)
    server.listen(1)
    out = open(console, "a")
    out.write("Linux version 6.1\\r\\n")
    out.flush()
    time.sleep(0.2)
    if mode in ("ready", "late-panic", "port-taken", "flood"):
        out.write("orchestrate: init start\\r\\nORCHESTRATE-READY\\r\\n")
        out.flush()
    elif mode == "panic":
        out.write("[    1.500000] Kernel panic - not syncing: Attempted to kill init!\\r\\n")
        out.flush()
        sys.exit(0)
    if mode == "late-panic":
        while not os.path.exists(os.path.join(here, "panic-now")):
            time.sleep(0.02)
        out.write("[    9.000000] Kernel panic - not syncing: Fatal exception\\r\\n")
        out.flush()
        if os.environ.get("FAKE_QEMU_EXIT"):  # like panic=-1: exit, the trace last
            out.write("[    9.000001] Call Trace:\\r\\n[    9.000001]  <TASK>\\r\\n")
            out.write("[    9.000001]  panic+0x1/0x2\\r\\n[    9.000001]  </TASK>\\r\\n")
            sys.exit(0)
    if mode == "flood":
        spam = "[    2.000000] spam spam spam spam spam spam spam spam spam spam\\r\\n" * 16384
        for i in range(int(os.environ["FAKE_QEMU_FLOOD"])):
            if i == 3:
                out.write("[    3.000000] WARNING: CPU: 0 PID: 1 at a.c:1 f+0x1/0x2\\r\\n\\r\\n")
            out.write(spam)
        out.write("[    4.000000] flood done\\r\\n")
        out.flush()
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


@pytest.fixture()
def fake_arch(tmp_path: Path) -> qemu.ArchSpec:
    script = tmp_path / "fake-qemu"
    script.write_text(f"#!{sys.executable}\n{FAKE_QEMU}")
    script.chmod(0o755)
    return qemu.ArchSpec(
        name="fake",
        qemu=str(script),
        machine="none",
        console="ttyS0",
        accel_args=qemu.X86_64.accel_args,
        net_device="virtio-net-pci",
    )


def fake_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if any("fake-qemu" in arg for arg in child.cmdline()):
                found.append(child)
    return found


@pytest.fixture()
def fake_mode(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    def set_mode(mode: str) -> None:
        monkeypatch.setenv("FAKE_QEMU_MODE", mode)

    return set_mode


def test_machine_ready_then_quit(
    fake_arch: qemu.ArchSpec, fake_mode: Callable[[str], None], short_dir: Path
) -> None:
    fake_mode("ready")
    with Machine(make_spec(short_dir), boot_timeout=20, arch=fake_arch) as vm:
        assert vm.alive()
        assert vm.boot_seconds is not None and 0.1 < vm.boot_seconds < 20
        assert "ORCHESTRATE-READY" in vm.console_tail()
        assert vm.qmp("query-status") == {"return": {}}
    assert not vm.alive()
    assert fake_children() == []
    assert not (short_dir / "qmp.sock").exists()


def test_a_pinned_machines_qemu_runs_on_its_cpus_only(
    fake_arch: qemu.ArchSpec, fake_mode: Callable[[str], None], short_dir: Path
) -> None:
    fake_mode("ready")
    cpu = max(psutil.Process().cpu_affinity() or [0])
    spec = dataclasses.replace(make_spec(short_dir), host_cpus=(cpu,))
    with Machine(spec, boot_timeout=20, arch=fake_arch):
        (child,) = fake_children()
        # taskset exec'd QEMU: the same process, with the mask.
        assert child.cpu_affinity() == [cpu]
        status = Path(f"/proc/{child.pid}/status").read_text()
        assert f"Cpus_allowed_list:\t{cpu}\n" in status
    assert fake_children() == []


def test_machine_is_not_alive_after_a_panic_even_while_qemu_runs(
    fake_arch: qemu.ArchSpec, fake_mode: Callable[[str], None], short_dir: Path
) -> None:
    fake_mode("late-panic")
    with Machine(make_spec(short_dir), boot_timeout=20, arch=fake_arch) as vm:
        assert vm.alive()
        (short_dir / "panic-now").touch()
        deadline = time.monotonic() + 10
        while vm.alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not vm.alive()
        assert fake_children() != []
    assert "Fatal exception" in vm.console_log.read_text()


def test_machine_panic_is_boot_failed_with_the_panic_line(
    fake_arch: qemu.ArchSpec, fake_mode: Callable[[str], None], short_dir: Path
) -> None:
    fake_mode("panic")
    with (
        pytest.raises(BootFailed) as failed,
        Machine(make_spec(short_dir), boot_timeout=20, arch=fake_arch),
    ):
        pass  # pragma: no cover
    assert failed.value.reason == "Kernel panic - not syncing: Attempted to kill init!"
    assert "Linux version" in failed.value.console_tail
    assert fake_children() == []


def test_machine_without_marker_times_out_and_is_killed(
    fake_arch: qemu.ArchSpec, fake_mode: Callable[[str], None], short_dir: Path
) -> None:
    fake_mode("silent")
    with pytest.raises(BootFailed, match="no ready marker within 1s") as failed:
        Machine(make_spec(short_dir), boot_timeout=1, arch=fake_arch).__enter__()
    assert "Linux version" in failed.value.console_tail
    assert fake_children() == []


def test_machine_qemu_refusing_names_its_error(
    fake_arch: qemu.ArchSpec, fake_mode: Callable[[str], None], short_dir: Path
) -> None:
    fake_mode("refuse")
    with pytest.raises(BootFailed, match=r"status 1 before the guest printed anything.*PVH"):
        Machine(make_spec(short_dir), boot_timeout=20, arch=fake_arch).__enter__()


def test_machine_stops_on_keyboard_interrupt(
    fake_arch: qemu.ArchSpec, fake_mode: Callable[[str], None], short_dir: Path
) -> None:
    fake_mode("ready")
    with (
        pytest.raises(KeyboardInterrupt),
        Machine(make_spec(short_dir), boot_timeout=20, arch=fake_arch),
    ):
        assert fake_children() != []
        raise KeyboardInterrupt
    assert fake_children() == []


# --- the accelerator probe ---------------------------------------------------


class Probe:
    def __init__(self, fails: bool = False) -> None:
        self.calls = 0
        self.fails = fails

    def __call__(self, kernel: Path, initrd: Path, timeout: float) -> float:
        self.calls += 1
        if self.fails:
            raise BootFailed(f"no ready marker within {timeout:.0f}s", "")
        return 0.4


def probe(tmp_path: Path, boot: Probe, kvm: Path | None = None) -> tuple[str, str]:
    return qemu.probe_accel(
        Path("/k/vmlinux"),
        Path("/k/initrd"),
        cache_dir=tmp_path / "cache",
        timeout=7,
        boot=boot,
        boot_id_file=tmp_path / "boot_id",
        kvm_device=kvm or tmp_path / "kvm",
    )


@pytest.fixture()
def host(tmp_path: Path) -> Path:
    """A fake /dev/kvm (openable read-write) and boot id."""
    (tmp_path / "kvm").write_bytes(b"")
    (tmp_path / "boot_id").write_text("boot-1\n")
    return tmp_path


def test_probe_without_kvm_device_is_tcg_without_booting(host: Path) -> None:
    boot = Probe()
    assert probe(host, boot, kvm=host / "missing") == ("tcg", f"no usable {host}/missing")
    assert boot.calls == 0


def test_kvm_device_that_cannot_be_opened_read_write_is_tcg(host: Path) -> None:
    # A directory: not openable read-write, even by root.
    boot = Probe()
    assert probe(host, boot, kvm=host)[0] == "tcg"
    assert boot.calls == 0


def test_probe_result_is_cached_per_host_boot(host: Path) -> None:
    boot = Probe()
    assert probe(host, boot) == (qemu.Accel.KVM, "KVM probe boot reached init in 0.4s")
    assert probe(host, boot)[0] is qemu.Accel.KVM
    accel, reason = probe(host, boot)
    assert (accel, boot.calls) == ("kvm", 1)
    assert "probed earlier in this host boot" in reason
    (host / "boot_id").write_text("boot-2\n")
    assert probe(host, boot)[0] == "kvm"
    assert boot.calls == 2


def test_failed_probe_falls_back_to_tcg_and_is_cached(host: Path) -> None:
    boot = Probe(fails=True)
    accel, reason = probe(host, boot)
    assert accel == "tcg"
    assert reason == "KVM probe boot failed (no ready marker within 7s): KVM unusable, using TCG"
    assert probe(host, boot)[0] == "tcg"
    assert boot.calls == 1


def test_guests_starting_at_once_probe_once(host: Path) -> None:
    boot = Probe()
    ready = threading.Barrier(3)
    answers: list[tuple[str, str]] = []

    def one() -> None:
        ready.wait(10)
        answers.append(probe(host, boot))

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert boot.calls == 1
    assert [a for a, _ in answers] == ["kvm"] * 3


def test_corrupt_cache_is_ignored(host: Path) -> None:
    (host / "cache").mkdir()
    (host / "cache" / "accel.json").write_text("{not json")
    boot = Probe()
    assert probe(host, boot)[0] == "kvm"
    assert boot.calls == 1
    assert json.loads((host / "cache" / "accel.json").read_text())["boot_id"] == "boot-1"


# --- the console through the FIFO, and the port race ---------------------------


def test_machine_console_log_is_capped_and_watched_whole(
    fake_arch: qemu.ArchSpec,
    fake_mode: Callable[[str], None],
    short_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_mode("flood")
    monkeypatch.setenv("FAKE_QEMU_FLOOD", "24")  # MiB
    with Machine(make_spec(short_dir), boot_timeout=20, arch=fake_arch) as vm:
        deadline = time.monotonic() + 60
        while not vm.console.seen("flood done") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert vm.console.seen("flood done")
        # The WARN printed 3 MiB in is reported, though the log dropped it.
        (warning,) = vm.console.all()
        assert warning.title == "WARNING: CPU: 0 PID: 1 at a.c:1 f+0x1/0x2"
    log = vm.console_log.read_bytes()
    limit = console.CONSOLE_HEAD + console.CONSOLE_TAIL + 64
    assert len(log) <= limit < 24 * 1024 * 1024
    assert log.startswith(b"Linux version 6.1\r\n")
    assert b" bytes dropped here]\n" in log and b"WARNING" not in log
    assert log.endswith(b"[    4.000000] flood done\r\n")
    assert not console.pipe_path(vm.console_log).exists()


def test_machine_starts_again_on_a_new_port_when_its_port_was_taken(
    fake_arch: qemu.ArchSpec, fake_mode: Callable[[str], None], short_dir: Path
) -> None:
    fake_mode("port-taken")
    (short_dir / "port-taken").write_text("2")
    spec = make_spec(short_dir)
    with Machine(spec, boot_timeout=20, arch=fake_arch) as vm:
        assert vm.port_retries == 2 and vm.alive()
        assert vm.spec.ssh_port != spec.ssh_port
        assert vm.spec == dataclasses.replace(spec, ssh_port=vm.spec.ssh_port)
        assert "ORCHESTRATE-READY" in vm.console_tail()
    assert fake_children() == []


def test_machine_gives_up_when_the_port_stays_taken(
    fake_arch: qemu.ArchSpec, fake_mode: Callable[[str], None], short_dir: Path
) -> None:
    fake_mode("port-taken")
    (short_dir / "port-taken").write_text("99")
    machine = Machine(make_spec(short_dir), boot_timeout=20, arch=fake_arch)
    with pytest.raises(BootFailed, match="Could not set up host forwarding rule"):
        machine.__enter__()
    assert machine.port_retries == qemu.PORT_ATTEMPTS - 1
    assert (short_dir / "port-taken").read_text() == str(99 - qemu.PORT_ATTEMPTS)


def test_other_boot_failures_are_not_retried(
    fake_arch: qemu.ArchSpec, fake_mode: Callable[[str], None], short_dir: Path
) -> None:
    fake_mode("panic")
    machine = Machine(make_spec(short_dir), boot_timeout=20, arch=fake_arch)
    with pytest.raises(BootFailed, match="Attempted to kill init"):
        machine.__enter__()
    assert machine.port_retries == 0


def test_a_flush_after_the_guest_died_has_its_last_words(
    fake_arch: qemu.ArchSpec,
    fake_mode: Callable[[str], None],
    short_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_mode("late-panic")
    monkeypatch.setenv("FAKE_QEMU_EXIT", "1")
    with Machine(make_spec(short_dir), boot_timeout=20, arch=fake_arch) as vm:
        (short_dir / "panic-now").touch()
        deadline = time.monotonic() + 10
        while vm.alive() and time.monotonic() < deadline:
            time.sleep(0.001)
        vm.console.flush()  # at once: it waits for what QEMU wrote to be read
        (panic,) = vm.console.all()
        assert panic.title == "Kernel panic - not syncing: Fatal exception"
        assert panic.trace == ("<TASK>", "panic+0x1/0x2", "</TASK>")
