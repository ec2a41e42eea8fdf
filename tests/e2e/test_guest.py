"""Real boots of a project-built kernel with the real image: QEMU, the console,
SSH, timeouts, boot failures, and that no QEMU ever outlives its owner."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from orchestrator import proc
from orchestrator.vm import image, qemu, ssh
from orchestrator.vm.qemu import BootFailed, Machine, VmSpec

from .conftest import REPO

pytestmark = pytest.mark.e2e
BOOT_TIMEOUT = 60.0
SSH_TIMEOUT = 30.0


@pytest.fixture(scope="session")
def guest_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[image.Keys, Path]:
    work = tmp_path_factory.mktemp("image")
    keys = image.make_keys(work / "keys")
    layers = image.image(work / "cache", keys, [], work)
    return keys, image.concatenate(layers, work / "initrd.cpio")


@pytest.fixture(scope="session")
def accel(
    kernel: Path, guest_image: tuple[image.Keys, Path], tmp_path_factory: pytest.TempPathFactory
) -> qemu.Accel:
    chosen, reason = qemu.probe_accel(
        kernel, guest_image[1], cache_dir=tmp_path_factory.mktemp("accel")
    )
    print(f"accelerator: {chosen} ({reason})")
    return chosen


@pytest.fixture()
def short_dir() -> Iterator[Path]:
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="orch-e2e-") as tmp:
        yield Path(tmp)


SpecFactory = Callable[..., VmSpec]


@pytest.fixture()
def make_spec(
    kernel: Path, guest_image: tuple[image.Keys, Path], accel: qemu.Accel, short_dir: Path
) -> SpecFactory:
    def make(cmdline_extra: str = "") -> VmSpec:
        return VmSpec(
            kernel=kernel,
            initrd=guest_image[1],
            cpus=2,
            memory_mb=512,
            accel=accel,
            cmdline_extra=cmdline_extra,
            console_log=short_dir / "console.log",
            qmp_socket=short_dir / "qmp.sock",
            ssh_port=qemu.free_port(),
        )

    return make


def qemu_children() -> list[psutil.Process]:
    return [
        p for p in psutil.Process().children(recursive=True) if p.name().startswith("qemu-system")
    ]


@pytest.fixture(autouse=True)
def no_qemu_survives() -> Iterator[None]:
    yield
    assert qemu_children() == []


def test_boot_ssh_files_and_kmsg_markers(
    make_spec: SpecFactory, guest_image: tuple[image.Keys, Path], tmp_path: Path
) -> None:
    spec = make_spec()
    with (
        Machine(spec, boot_timeout=BOOT_TIMEOUT) as vm,
        ssh.SshTransport.connect(
            port=vm.spec.ssh_port, keys=guest_image[0], timeout=SSH_TIMEOUT
        ) as g,
    ):
        assert vm.alive() and vm.boot_seconds is not None
        out, err = tmp_path / "out", tmp_path / "err"
        assert g.run("uname -r; cat /proc/cmdline", timeout=30, stdout=out, stderr=err).ok
        release, cmdline = out.read_text().splitlines()
        assert release.startswith("6.")
        assert cmdline == qemu.kernel_cmdline(spec)

        assert g.run("seq 1 50000", timeout=30, stdout=out, stderr=err).ok
        assert out.read_text().split() == [str(i) for i in range(1, 50001)]

        result = g.run("echo to-err >&2; exit 7", timeout=30, stdout=out, stderr=err)
        assert (result.exit_status, result.timed_out) == (7, False)
        assert err.read_text() == "to-err\n"

        payload = tmp_path / "payload"
        payload.write_bytes(bytes(range(256)) * 1000)
        g.put(payload, "/root/payload", 0o750)
        g.get("/root/payload", tmp_path / "back")
        assert (tmp_path / "back").read_bytes() == payload.read_bytes()
        g.run("stat -c %a /root/payload", timeout=30, stdout=out, stderr=err)
        assert out.read_text() == "750\n"
        with pytest.raises(ssh.SshError):
            g.get("/nonexistent", tmp_path / "missing")

        marker = "orchestrate: begin test e2e-marker"
        g.kmsg(marker)
        deadline = time.monotonic() + 10
        while not vm.console.seen(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert vm.console.seen(marker)
        assert marker in g.dmesg()
        assert g.ping()
        assert vm.qmp("query-status")["return"]["status"] == "running"
        assert vm.console.poll() == []  # a clean boot: no splats


def test_timed_out_command_is_killed_and_the_guest_answers(
    make_spec: SpecFactory, guest_image: tuple[image.Keys, Path], tmp_path: Path
) -> None:
    spec = make_spec()
    out, err = tmp_path / "out", tmp_path / "err"
    with (
        Machine(spec, boot_timeout=BOOT_TIMEOUT) as vm,
        ssh.SshTransport.connect(
            port=vm.spec.ssh_port, keys=guest_image[0], timeout=SSH_TIMEOUT
        ) as g,
    ):
        # A child in the background and one in the foreground: both must go.
        result = g.run("echo started; sleep 301 & sleep 302", timeout=2, stdout=out, stderr=err)
        assert result.timed_out and result.exit_status is None
        assert 2 <= result.duration < 5
        assert out.read_text() == "started\n"
        assert g.ping()
        assert g.run("ps", timeout=30, stdout=out, stderr=err).ok
        assert "sleep 30" not in out.read_text()
        assert g.run("echo next", timeout=30, stdout=out, stderr=err).ok
        assert out.read_text() == "next\n"


def test_crashed_guest_is_dead_at_once(
    make_spec: SpecFactory, guest_image: tuple[image.Keys, Path], tmp_path: Path
) -> None:
    spec = make_spec()
    out, err = tmp_path / "out", tmp_path / "err"
    with (
        Machine(spec, boot_timeout=BOOT_TIMEOUT) as vm,
        ssh.SshTransport.connect(
            port=vm.spec.ssh_port, keys=guest_image[0], timeout=SSH_TIMEOUT
        ) as g,
    ):
        g.kmsg("orchestrate: begin test crash")
        result = g.run("echo c > /proc/sysrq-trigger", timeout=30, stdout=out, stderr=err)
        assert (result.exit_status, result.timed_out) == (None, False)
        # SSH drops a few ms before QEMU exits: alive() must not say yes then.
        assert not vm.alive()
        assert not g.ping(timeout=2)
        vm.console.flush()  # the log ends here: the last report is complete
        splats = vm.console.all()
        assert any(s.kind == "panic" and s.test == "crash" for s in splats), splats


def test_frozen_guest_fails_ping_and_times_out_commands_quickly(
    make_spec: SpecFactory, guest_image: tuple[image.Keys, Path], tmp_path: Path
) -> None:
    spec = make_spec()
    out, err = tmp_path / "out", tmp_path / "err"
    with (
        Machine(spec, boot_timeout=BOOT_TIMEOUT) as vm,
        ssh.SshTransport.connect(
            port=vm.spec.ssh_port, keys=guest_image[0], timeout=SSH_TIMEOUT
        ) as g,
    ):
        vm.qmp("stop")  # every vCPU halts: the guest looks wedged
        start = time.monotonic()
        assert not g.ping(timeout=2)
        result = g.run("true", timeout=2, stdout=out, stderr=err)
        assert result.timed_out
        assert time.monotonic() - start < 12  # ping, run, and run's kill attempt
        vm.qmp("cont")
        assert g.ping(timeout=10)


def test_teardown_of_a_frozen_qemu_process(make_spec: SpecFactory) -> None:
    vm = Machine(make_spec(), boot_timeout=BOOT_TIMEOUT)
    with vm:
        qemu_process = psutil.Process(qemu_children()[0].pid)
        qemu_process.suspend()  # QEMU itself answers nothing now, QMP included
        start = time.monotonic()
    assert time.monotonic() - start < 10
    assert not qemu_process.is_running()


def test_kernel_panic_is_a_quick_boot_failure(make_spec: SpecFactory) -> None:
    # rdinit alone would not do: the kernel falls back to /sbin/init (busybox
    # init) in the initramfs.  A failing init= panics.
    spec = make_spec("rdinit=/nonexistent init=/nonexistent")
    with pytest.raises(BootFailed) as failed, Machine(spec, boot_timeout=BOOT_TIMEOUT):
        pass  # pragma: no cover
    # The reason is the panic, so the boot did not wait for its timeout.
    assert failed.value.reason.startswith("Kernel panic - not syncing: Requested init")
    assert "Kernel panic" in failed.value.console_tail


def test_missing_ready_marker_is_a_boot_failure_at_the_timeout(make_spec: SpecFactory) -> None:
    # A shell as init: the guest runs but never says ready.
    spec = make_spec("rdinit=/bin/sh")
    start = time.monotonic()
    with (
        pytest.raises(BootFailed, match="no ready marker within 8s") as failed,
        Machine(spec, boot_timeout=8),
    ):
        pass  # pragma: no cover
    assert 8 <= time.monotonic() - start < 15
    assert "BusyBox" in failed.value.console_tail


BOOT_SCRIPT = textwrap.dedent(
    """\
    import signal, sys
    from pathlib import Path
    from orchestrator.vm.qemu import Machine, VmSpec

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    # As the CLI does: SIGTERM unwinds like Ctrl-C, through every finally.
    signal.signal(signal.SIGTERM, interrupt)
    kernel, initrd, accel, tmp, port = sys.argv[1:]
    spec = VmSpec(Path(kernel), Path(initrd), 2, 512, accel, "", Path(tmp) / "console.log",
                  Path(tmp) / "qmp.sock", int(port))
    with Machine(spec, boot_timeout=120):
        print("ready", flush=True)
        signal.pause()
    """
)


def processes_mentioning(needle: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if any(needle in arg for arg in p.info["cmdline"] or []):
            found.append(p)
    return found


def test_sigterm_mid_boot_leaves_no_qemu(
    make_spec: SpecFactory, short_dir: Path, tmp_path: Path
) -> None:
    spec = make_spec()
    script = tmp_path / "boot.py"
    script.write_text(BOOT_SCRIPT)
    args: list[str | Path] = [spec.kernel, spec.initrd, spec.accel, short_dir, str(spec.ssh_port)]
    env = {"PYTHONPATH": str(REPO)}
    with proc.spawn([sys.executable, script, *args], log=tmp_path / "boot.log", env=env) as owner:
        needle = str(spec.console_log)
        deadline = time.monotonic() + 30
        while not processes_mentioning(needle) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_mentioning(needle), (tmp_path / "boot.log").read_text()
        console = spec.console_log
        assert not console.exists() or "ORCHESTRATE-READY" not in console.read_text("latin-1")
        os.kill(owner.pid, signal.SIGTERM)  # the owner only: QEMU has its own session
        assert owner.wait(20) is not None
    assert "KeyboardInterrupt" in (tmp_path / "boot.log").read_text()
    assert processes_mentioning(needle) == []
