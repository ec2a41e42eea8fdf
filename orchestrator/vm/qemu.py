"""Boot a kernel in QEMU: a pure argv builder and the Machine that owns the VM.

The QEMU command line is data: :func:`argv` is a pure function of a
:class:`VmSpec` and an :class:`ArchSpec` (virtme-ng's arch table, not its
driver), golden-tested and printable with ``shlex.join``.  :class:`Machine`
starts it through :mod:`orchestrator.proc`, waits for the guest's ready
marker on the serial console, and always tears the VM down: QMP ``quit``,
then the process-tree kill.  It never waits for the guest to power off: a
wedged guest does not (see DESIGN.md, "The guest").

QEMU writes the serial console into a FIFO (:func:`console.pipe_path`) that
the Machine's :class:`~orchestrator.vm.console.ConsoleCapture` reads into the
console log, capped (first 2 MiB, last 6 MiB), and into the watcher: a guest
printing without end cannot fill the disk or the memory.

The SSH port is picked free (:func:`free_port`) and QEMU binds it a moment
later; when another process took it in between, QEMU exits with "Could not
set up host forwarding rule" and the Machine starts it again on a new port
(:data:`PORT_ATTEMPTS` times in all) instead of reporting a BOOT-FAIL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import io
import json
import os
import re
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

from orchestrator import proc
from orchestrator.vm.console import ConsoleCapture, ConsoleWatcher, pipe_path


class Accel(enum.StrEnum):
    """The accelerator a guest runs under (the matrix's `auto` is resolved by probe_accel)."""

    KVM = "kvm"
    TCG = "tcg"


ACCELS: tuple[str, ...] = tuple(a.value for a in Accel)

READY_MARKER = "ORCHESTRATE-READY"
INIT_MARKER = "orchestrate: init start"
PANIC_MARKER = "Kernel panic - not syncing"
# sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
POLL_INTERVAL = 0.02
QMP_TIMEOUT = 2.0
QUIT_GRACE = 2.0
# Seconds to wait, once QEMU has exited, for the last console bytes to be read.
CONSOLE_SETTLE = 1.0
# QEMU 7.2's message when the host forward's port is taken (slirp's bind failed).
PORT_TAKEN = "Could not set up host forwarding rule"
PORT_ATTEMPTS = 3  # QEMU starts, each on a new port, while the port was taken
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
KVM_DEVICE = Path("/dev/kvm")
# Guests that start at once (--vms) probe one at a time: the second reads the
# first one's answer from the cache instead of booting a probe of its own.
_PROBE_LOCK = threading.Lock()


@dataclass(frozen=True)
class ArchSpec:
    """What QEMU needs to know about one guest architecture."""

    name: str
    qemu: str
    machine: str
    console: str  # the guest's serial console device
    accel_args: Mapping[Accel, tuple[str, ...]]  # per accelerator: -accel and -cpu
    net_device: str


X86_64 = ArchSpec(
    name="x86_64",
    qemu="qemu-system-x86_64",
    # q35 and pc booted the PVH vmlinux equally fast (median 1.46 s vs 1.45 s
    # to the ready marker under TCG); q35 is the modern PCIe machine.
    machine="q35",
    console="ttyS0",
    accel_args=MappingProxyType(
        {
            Accel.KVM: ("-accel", "kvm", "-cpu", "host"),
            # Multi-threaded TCG: one host thread per vCPU.
            Accel.TCG: ("-accel", "tcg,thread=multi", "-cpu", "max"),
        }
    ),
    net_device="virtio-net-pci",
)
ARCHES: Mapping[str, ArchSpec] = MappingProxyType({X86_64.name: X86_64})


@dataclass(frozen=True)
class VmSpec:
    kernel: Path  # an uncompressed vmlinux, booted through its PVH entry
    initrd: Path
    cpus: int
    memory_mb: int
    accel: Accel
    cmdline_extra: str
    console_log: Path
    qmp_socket: Path
    ssh_port: int
    # The host CPUs QEMU may run on (its guest's CPU set when several guests
    # run at once); () is any.
    host_cpus: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.accel not in ACCELS:
            raise ValueError(f"accel must be one of {ACCELS}, not {self.accel!r}")
        # A plain word ("tcg") is taken as its Accel.
        object.__setattr__(self, "accel", Accel(self.accel))
        if len(os.fsencode(self.qmp_socket)) > MAX_SOCKET_PATH:
            raise ValueError(
                f"QMP socket path is longer than {MAX_SOCKET_PATH} bytes: {self.qmp_socket}"
            )


def kernel_cmdline(spec: VmSpec, arch: ArchSpec = X86_64) -> str:
    """The guest kernel's command line; cmdline_extra comes last, so it wins."""
    base = [
        f"console={arch.console}",
        # A panic reboots at once, and -no-reboot turns that into QEMU
        # exiting: a panicked boot ends now, not at the boot timeout.
        "panic=-1",
        # Not `quiet`: it means loglevel=4, which hides KERN_WARNING, and
        # WARN() splats, lockdep reports and the call traces printed at the
        # default message level are all level 4.  loglevel=5 shows them and
        # still hides the KERN_INFO boot chatter (measured: quiet, loglevel=5
        # and the default 7 all reached ready in ~1.3 s with a tiny kernel).
        "loglevel=5",
        # The /dev/kmsg test markers must never be rate-limited away.
        "printk.devkmsg=on",
        # Guest timestamps on every console line (for Splat.timestamp), also
        # when the kernel's config lacks PRINTK_TIME.
        "printk.time=1",
        # Seed the kernel's RNG from RDRAND (TCG's -cpu max has it) at boot.
        # Otherwise dropbear's first getrandom() blocks until the jitter
        # entropy collector has run: measured 1.1 s of the 1.4 s from the
        # ready marker to an SSH login under TCG, 0.25 s with this.
        "random.trust_cpu=on",
        "rdinit=/init",
    ]
    return " ".join([*base, *spec.cmdline_extra.split()])


def argv(spec: VmSpec, arch: ArchSpec = X86_64) -> list[str]:
    """The full QEMU command line for spec: pure, every element a str."""
    return [
        arch.qemu,
        *("-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"),
        *("-machine", arch.machine),
        *arch.accel_args[spec.accel],
        *("-smp", str(spec.cpus), "-m", str(spec.memory_mb)),
        *("-kernel", str(spec.kernel), "-initrd", str(spec.initrd)),
        *("-append", kernel_cmdline(spec, arch)),
        # The console goes to a FIFO that the Machine reads into the console
        # log (capped), never to stdio (-nographic would fight over stdio, and
        # QEMU's own messages go to its log).  QEMU opens it as a file.
        *("-chardev", f"file,id=console,path={console_pipe(spec)}"),
        *("-serial", "chardev:console"),
        *("-qmp", f"unix:{spec.qmp_socket},server=on,wait=off"),
        # The guest's sshd, reachable from this host only.
        *("-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22"),
        *("-device", f"{arch.net_device},netdev=net0"),
    ]


def launch_argv(spec: VmSpec, arch: ArchSpec = X86_64) -> list[str]:
    """argv, behind `taskset` when spec names host CPUs.

    taskset sets the mask before it execs QEMU, so every thread QEMU makes
    (vCPUs, I/O) inherits it; pinning after the start (psutil's
    cpu_affinity) would miss the threads QEMU had already made.
    """
    if not spec.host_cpus:
        return argv(spec, arch)
    cpus = ",".join(str(c) for c in spec.host_cpus)
    return ["taskset", "--cpu-list", cpus, *argv(spec, arch)]


def console_pipe(spec: VmSpec) -> Path:
    """The FIFO QEMU writes the serial console into (read into spec.console_log)."""
    return pipe_path(spec.console_log)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (QEMU binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- QMP ---------------------------------------------------------------------


class QmpError(Exception):
    """The QMP socket failed or QEMU answered a command with an error."""


def _qmp_message(stream: io.BufferedIOBase) -> dict[str, Any]:
    """The next reply from QEMU, skipping asynchronous events."""
    while True:
        line = stream.readline()
        if not line:
            raise QmpError("QMP connection closed")
        message: dict[str, Any] = json.loads(line)
        if "event" not in message:
            return message


def qmp_command(
    path: Path,
    command: str,
    arguments: Mapping[str, Any] | None = None,
    *,
    timeout: float = QMP_TIMEOUT,
) -> dict[str, Any]:
    """Run one QMP command on a fresh connection; the reply message.

    Every socket operation has the timeout, so a stuck QEMU cannot hang
    the caller.  Raises QmpError on any failure or an error reply.
    """
    request: dict[str, Any] = {"execute": command}
    if arguments:
        request["arguments"] = dict(arguments)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            with sock.makefile("rwb") as stream:
                greeting = json.loads(stream.readline() or b"{}")
                if "QMP" not in greeting:
                    raise QmpError(f"not a QMP greeting: {greeting}")
                for message in ({"execute": "qmp_capabilities"}, request):
                    stream.write(json.dumps(message).encode() + b"\r\n")
                    stream.flush()
                    reply = _qmp_message(stream)
                    if "error" in reply:
                        raise QmpError(f"{message['execute']}: {reply['error']}")
                return reply
    except (OSError, ValueError) as exc:
        raise QmpError(f"QMP {command} on {path}: {exc}") from exc


# --- the machine -------------------------------------------------------------


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


_PANIC = re.compile(re.escape(PANIC_MARKER) + ".*")


class BootFailed(Exception):
    """The guest did not become ready: a BOOT-FAIL verdict, not a tool fault."""

    def __init__(self, reason: str, console_tail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.console_tail = console_tail


def _panic_line(text: str) -> str | None:
    """The first panic line of a console text, without its printk timestamp."""
    for line in text.splitlines():
        found = _PANIC.search(line)
        if found:
            return found.group(0).strip()
    return None


class Machine:
    """One running VM; a context manager that always stops it.

    ``with Machine(spec, boot_timeout=60) as vm:`` returns once the console
    shows the ready marker, or raises BootFailed; the VM is gone after the
    block on every exit path, KeyboardInterrupt included.  When QEMU could
    not bind the SSH port, ``with`` starts it again on a new one: ``vm.spec``
    is the spec that booted (its ``ssh_port`` may differ from the one given).
    """

    def __init__(
        self,
        spec: VmSpec,
        *,
        boot_timeout: float,
        ready_marker: str = READY_MARKER,
        arch: ArchSpec = X86_64,
    ) -> None:
        self.spec = spec
        self.boot_timeout = boot_timeout
        self.ready_marker = ready_marker
        self.arch = arch
        self.boot_seconds: float | None = None
        self.qemu_log = spec.console_log.with_name(spec.console_log.name + ".qemu.log")
        # Shared with the caller, who polls it for splats while tests run.
        self.console = ConsoleWatcher(settle=self.settle)
        self.port_retries = 0  # starts again because the SSH port was taken
        self._capture: ConsoleCapture | None = None
        self._process: proc.Background | None = None
        self._log_start = 0  # where this start's messages begin in qemu_log

    @property
    def console_log(self) -> Path:
        return self.spec.console_log

    def __enter__(self) -> Machine:
        while True:
            try:
                self.start()
                self.wait_ready()
            except BootFailed:
                self.stop()
                if self.port_retries + 1 >= PORT_ATTEMPTS or not self._port_taken():
                    raise
                self._new_port()
            except BaseException:
                self.stop()
                raise
            else:
                return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._process is not None:
            raise RuntimeError("this Machine was already started")
        self.spec.console_log.parent.mkdir(parents=True, exist_ok=True)
        # A stale socket from an earlier boot would fake progress; the
        # capture starts the console log afresh.
        self.spec.qmp_socket.unlink(missing_ok=True)
        # Looked for from the first byte on (seen() watches what comes after
        # its first call, and the last lines before it).
        self.console.seen(PANIC_MARKER)
        self._capture = ConsoleCapture(self.spec.console_log, self.console)
        self._capture.start()
        try:
            self._log_start = self.qemu_log.stat().st_size
        except FileNotFoundError:
            self._log_start = 0
        try:
            self._process = proc.spawn(launch_argv(self.spec, self.arch), log=self.qemu_log)
        except BaseException:
            self._capture.stop()
            raise

    def _port_taken(self) -> bool:
        """Whether QEMU, in this start, could not bind the SSH port (another process had)."""
        try:
            with self.qemu_log.open("rb") as log:
                log.seek(self._log_start)
                said = log.read(1 << 16)
        except FileNotFoundError:
            return False
        return PORT_TAKEN.encode() in said

    def _new_port(self) -> None:
        """Get ready to start again, on another port, with a fresh console."""
        self.port_retries += 1
        self.spec = dataclasses.replace(self.spec, ssh_port=free_port())
        self.console = ConsoleWatcher(settle=self.settle)
        self._capture = None
        self._process = None

    def wait_ready(self) -> float:
        """Seconds from QEMU start to the ready marker, or raise BootFailed."""
        process = self._require()
        deadline = process.started + self.boot_timeout
        while True:
            if self.console.seen(self.ready_marker):
                self.boot_seconds = time.monotonic() - process.started
                return self.boot_seconds
            status = process.poll()
            if status is not None:
                # The last words may have been read after the check above.
                self.settle()
                if self.console.seen(self.ready_marker):
                    continue
                raise self._exited(status)
            if time.monotonic() >= deadline:
                raise BootFailed(
                    f"no ready marker within {self.boot_timeout:.0f}s", self.console.tail()
                )
            time.sleep(POLL_INTERVAL)

    def _exited(self, status: int) -> BootFailed:
        tail = self.console.tail()
        panic = _panic_line(tail)
        if panic:
            return BootFailed(panic, tail)
        if not tail.strip():
            # Nothing on the console: QEMU itself refused (e.g. no PVH note).
            said = "; ".join(_log_tail(self.qemu_log).splitlines())
            return BootFailed(
                f"QEMU exited with status {status} before the guest printed anything: {said}",
                tail,
            )
        return BootFailed(f"QEMU exited with status {status} before the ready marker", tail)

    def settle(self, timeout: float = CONSOLE_SETTLE) -> None:
        """When the console is final, wait until all of it was read (console.flush calls it).

        It is final once QEMU has exited, and nearly so once the guest has
        panicked: with panic=-1 QEMU exits a few ms later, so wait for that.
        """
        process, capture = self._process, self._capture
        if process is None or capture is None:
            return
        deadline = time.monotonic() + timeout
        if process.poll() is None:
            if not self.console.seen(PANIC_MARKER):
                return  # a live guest: its console goes on
            process.wait(timeout)
        if process.poll() is not None:
            capture.settle(max(0.0, deadline - time.monotonic()))

    def _require(self) -> proc.Background:
        if self._process is None:
            raise RuntimeError("the Machine is not started")
        return self._process

    def alive(self) -> bool:
        """QEMU runs and the guest kernel has not panicked.

        After a panic QEMU needs a moment to exit (measured: SSH dropped
        5-60 ms before the process ended), and with panic=0 it never does.
        """
        if self._process is None or self._process.poll() is not None:
            return False
        return not self.console.seen(PANIC_MARKER)

    def killed_by(self) -> str | None:
        """The signal that ended QEMU, when something outside the guest killed it
        (a guest that panics or powers off makes QEMU exit, not die of a signal)."""
        status = self._process.poll() if self._process is not None else None
        if status is None or status >= 0:
            return None
        return signal.Signals(-status).name

    def qmp(self, command: str, arguments: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return qmp_command(self.spec.qmp_socket, command, arguments)

    def console_tail(self, lines: int = 40) -> str:
        return self.console.tail(lines)

    def stop(self) -> None:
        """QMP quit, a short grace, then kill the tree; idempotent."""
        process = self._process
        if process is None:
            return
        try:
            if process.poll() is None:
                with contextlib.suppress(QmpError):
                    qmp_command(self.spec.qmp_socket, "quit", timeout=1.0)
                process.wait(QUIT_GRACE)
        finally:
            # Also on a second Ctrl-C during the grace above.
            try:
                process.stop()
                self.spec.qmp_socket.unlink(missing_ok=True)
            finally:
                if self._capture is not None:
                    self._capture.stop()


# --- choosing the accelerator ------------------------------------------------

ProbeBoot = Callable[[Path, Path, float], float]


def kvm_usable(device: Path = KVM_DEVICE) -> bool:
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def _probe_boot(kernel: Path, initrd: Path, timeout: float) -> float:
    """Seconds for a KVM boot to reach init; raises BootFailed otherwise."""
    # A short private directory: unix socket paths are limited to 107 bytes.
    with tempfile.TemporaryDirectory(prefix="orchestrate-kvm-") as tmp:
        spec = VmSpec(
            kernel=kernel,
            initrd=initrd,
            cpus=1,
            memory_mb=256,
            accel=Accel.KVM,
            cmdline_extra="",
            console_log=Path(tmp) / "console.log",
            qmp_socket=Path(tmp) / "qmp.sock",
            ssh_port=free_port(),
        )
        with Machine(spec, boot_timeout=timeout, ready_marker=INIT_MARKER) as vm:
            return vm.boot_seconds or 0.0


def probe_accel(
    kernel: Path,
    initrd: Path,
    *,
    cache_dir: Path,
    timeout: float = 10.0,
    boot: ProbeBoot = _probe_boot,
    boot_id_file: Path = BOOT_ID,
    kvm_device: Path = KVM_DEVICE,
) -> tuple[Accel, str]:
    """(accelerator, reason): KVM if a probe boot reaches init quickly, else TCG.

    /dev/kvm can exist while KVM guests hang or QEMU aborts (both seen on
    the project's machines), so only a real boot proves it.  KVM's health
    does not change within one host boot: the answer is cached per boot id
    and only the first run after a host boot pays for the probe.
    """
    if not kvm_usable(kvm_device):
        return Accel.TCG, f"no usable {kvm_device}"
    with _PROBE_LOCK:
        return _probe_cached(kernel, initrd, cache_dir, timeout, boot, boot_id_file)


def _probe_cached(
    kernel: Path, initrd: Path, cache_dir: Path, timeout: float, boot: ProbeBoot, boot_id_file: Path
) -> tuple[Accel, str]:
    cache = cache_dir / "accel.json"
    boot_id = boot_id_file.read_text().strip()
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        cached = json.loads(cache.read_text())
        if cached["boot_id"] == boot_id and cached["accel"] in ACCELS:
            return Accel(cached["accel"]), f"{cached['reason']} (probed earlier in this host boot)"
    accel, reason = _run_probe(kernel, initrd, timeout, boot)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Per process and thread: two writers never share a temporary file.
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.{threading.get_native_id()}.tmp")
    tmp.write_text(json.dumps({"boot_id": boot_id, "accel": accel, "reason": reason}) + "\n")
    tmp.replace(cache)
    return accel, reason


def _run_probe(kernel: Path, initrd: Path, timeout: float, boot: ProbeBoot) -> tuple[Accel, str]:
    try:
        seconds = boot(kernel, initrd, timeout)
    except BootFailed as failed:
        return Accel.TCG, f"KVM probe boot failed ({failed.reason}): KVM unusable, using TCG"
    return Accel.KVM, f"KVM probe boot reached init in {seconds:.1f}s"
