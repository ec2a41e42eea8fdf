"""The pipe into a running guest: commands, files and kernel log over SSH.

:class:`SshTransport` talks to the guest's dropbear through QEMU's host
forward on 127.0.0.1.  The guest's host key was generated on this host and
baked into the image, so it is pinned: an unknown key is rejected, never
learned.  Every operation is bounded by a timeout, because the guest kernel
under test may wedge at any moment and the caller must still get an answer
(a timeout, a failed ping) instead of a hang.

The guest has no sftp-server (Debian's dropbear-bin ships none), so files
travel over exec channels: ``cat > file`` with stdin, and ``cat file``.

Commands are strings that the guest's shell runs: callers pass fixed
commands and quote every argument with :func:`shlex.quote`.

Output is bounded, whatever the guest prints: a test's stdout and stderr
files keep their first and last :data:`OUTPUT_HEAD` / :data:`OUTPUT_TAIL`
bytes (with a line saying how much was dropped between them), and the
output of the transport's own commands (ping, kill, dmesg, ...) is kept in
memory the same way, up to :data:`CAPTURE_LIMIT` bytes each.  Files copied
with :meth:`SshTransport.get` are copied whole: they are what was asked for.
"""

from __future__ import annotations

import base64
import io
import itertools
import logging
import select
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol

import paramiko

from orchestrator.vm.console import CappedLog, MiB
from orchestrator.vm.image import Keys

USER = "root"
# paramiko's transport logs "Error reading SSH protocol banner" tracebacks
# while the guest's sshd is not up yet, and socket errors when the VM is
# killed under it: its records go to this logger, which drops them.
PARAMIKO_LOG = "orchestrator.vm.ssh.paramiko"
ATTEMPT_TIMEOUT = 5.0
RETRY_DELAY = 0.2
READ_SIZE = 32768
SELECT_INTERVAL = 0.05
# After the exit status, output written by a process the command left
# behind could keep the channel open forever: read this much longer, no more.
DRAIN_GRACE = 0.5
# Guest directory for the pid files of run()'s commands (init mounts a tmpfs).
JOB_DIR = "/run"
# A test's stdout and stderr on disk: the first and last bytes of each
# (KTAP results are at the start and the end), compacted every OUTPUT_SLACK.
OUTPUT_HEAD = 1 * MiB
OUTPUT_TAIL = 1 * MiB
OUTPUT_SLACK = 1 * MiB
# In memory, each stream of the transport's own commands (dmesg is the largest:
# the kernel's log buffer, 128 KiB by default).
CAPTURE_LIMIT = 2 * MiB

_paramiko_log = logging.getLogger(PARAMIKO_LOG)
_paramiko_log.propagate = False
_paramiko_log.addHandler(logging.NullHandler())


class SshError(Exception):
    """The guest did not answer over SSH, or a file transfer failed.

    Not an InfraError: a guest that stops answering is the kernel's
    verdict (KERNEL-HANG, BOOT-FAIL), which only the caller can name.
    """


@dataclass(frozen=True)
class ExecResult:
    exit_status: int | None  # None: timed out, or killed by a signal
    timed_out: bool
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and not self.timed_out


class _Sink(Protocol):
    """Where a command's output goes: a file, or a CappedLog."""

    def write(self, data: bytes, /) -> object: ...
    def flush(self) -> object: ...


class Transport(Protocol):
    """What the test runners need from a pipe into the guest."""

    def run(self, command: str, *, timeout: float, stdout: Path, stderr: Path) -> ExecResult: ...

    def ping(self, timeout: float = 5.0) -> bool: ...

    def kill_remote(self, pid: int, *, timeout: float = 5.0) -> bool: ...

    def put(self, local: Path, remote: str, mode: int = 0o644) -> None: ...

    def get(self, remote: str, local: Path) -> None: ...

    def kmsg(self, text: str) -> None: ...

    def dmesg(self) -> str: ...

    def close(self) -> None: ...


def sshd_refused(port: int, timeout: float = 5.0) -> bool:
    """Whether the guest's kernel turned away a connection to its SSH port.

    QEMU's user-mode network accepts the host side at once and connects on
    to the guest: a running kernel with nothing listening resets that, so the
    host side is closed without a banner; a hung kernel says nothing, and the
    connection just waits.  So True means "the kernel runs, sshd is gone".
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(64) == b""
    except (ConnectionResetError, ConnectionRefusedError):
        return True
    except OSError:  # timed out: no answer at all
        return False


def job_command(command: str, pidfile: str) -> str:
    """command for the guest's shell, run as the leader of a new session.

    The shell sshd starts writes its pid ($$) and execs setsid, which keeps
    that pid (the shell is no group leader, so setsid need not fork) and
    makes it the session and process group id of everything command starts.
    """
    return f"echo $$ > {shlex.quote(pidfile)} && exec setsid sh -c {shlex.quote(command)}"


def host_key(public: str) -> paramiko.Ed25519Key:
    """The pinned host key from "ssh-ed25519 <base64>"."""
    kind, data = public.split()[:2]
    if kind != "ssh-ed25519":
        raise ValueError(f"not an ed25519 public key: {public!r}")
    return paramiko.Ed25519Key(data=base64.b64decode(data))


def banner_ready(host: str, port: int, timeout: float) -> bool:
    """Whether an SSH server sends its banner on host:port.

    QEMU's user network accepts the TCP connection itself, even while
    nothing listens in the guest, so an open port proves nothing: only the
    "SSH-" banner does.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _client(host: str, port: int, keys: Keys) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    # Port forwards are known as "[host]:port" in known_hosts terms.
    name = host if port == 22 else f"[{host}]:{port}"
    client.get_host_keys().add(name, "ssh-ed25519", host_key(keys.host_public))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.set_log_channel(PARAMIKO_LOG)
    return client


def _connect_once(host: str, port: int, keys: Keys, timeout: float) -> paramiko.SSHClient:
    client = _client(host, port, keys)
    try:
        client.connect(
            host,
            port,
            username=USER,
            pkey=paramiko.Ed25519Key.from_private_key_file(str(keys.client_private)),
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
            look_for_keys=False,
            allow_agent=False,
        )
    except BaseException:
        client.close()
        raise
    return client


class SshTransport:
    """A connected SSH session to the guest; use ``with`` or close()."""

    def __init__(self, client: paramiko.SSHClient) -> None:
        self._client = client
        self._jobs = itertools.count(1)

    @classmethod
    def connect(
        cls, *, port: int, keys: Keys, timeout: float, host: str = "127.0.0.1"
    ) -> SshTransport:
        """Connect, retrying quietly until sshd answers or timeout passes.

        A host key mismatch is not retried: something else answers there.
        """
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SshError(f"no SSH login on {host}:{port} within {timeout:.0f}s: {last}")
            attempt = min(left, ATTEMPT_TIMEOUT)
            if banner_ready(host, port, attempt):
                try:
                    return cls(_connect_once(host, port, keys, attempt))
                except paramiko.BadHostKeyException as exc:
                    raise SshError(f"{host}:{port}: {exc}") from exc
                except (paramiko.SSHException, OSError, EOFError) as exc:
                    last = exc
            else:
                last = ConnectionError("no SSH banner")
            time.sleep(min(RETRY_DELAY, max(0.0, deadline - time.monotonic())))

    def __enter__(self) -> SshTransport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    @property
    def active(self) -> bool:
        transport = self._client.get_transport()
        return transport is not None and transport.is_active()

    # --- exec ------------------------------------------------------------------

    def _open(self, command: str, timeout: float) -> paramiko.Channel | None:
        """A channel running command; None when the guest did not answer in time."""
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise SshError("the SSH connection is closed")
        try:
            channel = transport.open_session(timeout=timeout)
            channel.settimeout(timeout)
            channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if transport.is_active():
                return None  # connected, but nobody answers: a wedged guest
            raise SshError(f"cannot start {command!r} in the guest: {exc}") from exc
        return channel

    def _exec(
        self,
        command: str,
        *,
        timeout: float,
        out: _Sink,
        err: _Sink,
        stdin: BinaryIO | None = None,
    ) -> ExecResult:
        """Run command, streaming its output into out and err as it arrives."""
        start = time.monotonic()
        deadline = start + timeout
        channel = self._open(command, timeout)
        if channel is None:
            return ExecResult(None, timed_out=True, duration=time.monotonic() - start)
        try:
            if stdin is not None:
                _send(channel, stdin, deadline)
            timed_out = not _pump(channel, out, err, deadline)
            status = None if timed_out else channel.recv_exit_status()
        except TimeoutError:  # socket.timeout too: stdin was not read in time
            timed_out, status = True, None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshError(f"lost the guest during {command!r}: {exc}") from exc
        finally:
            channel.close()
        return ExecResult(
            exit_status=None if status is None or status < 0 else status,
            timed_out=timed_out,
            duration=time.monotonic() - start,
        )

    def run(
        self,
        command: str,
        *,
        timeout: float,
        stdout: Path,
        stderr: Path,
        kill_on_timeout: bool = True,
    ) -> ExecResult:
        """Run a test command; on timeout kill everything it started.

        The command runs in its own session (setsid), and its shell's pid,
        which is also its process group id, goes to a pid file first, so that
        a timed-out command and all its children can be killed as a group.
        Closing the channel alone would leave them running.  A guest that
        stops answering gives timed_out too (ping() tells the two apart); a
        lost connection raises SshError.  The output files are capped: see
        the module's docstring.
        """
        pidfile = f"{JOB_DIR}/orchestrate-job-{next(self._jobs)}.pid"
        wrapped = job_command(command, pidfile)
        limits = {"head": OUTPUT_HEAD, "tail": OUTPUT_TAIL, "slack": OUTPUT_SLACK}
        with CappedLog.open(stdout, **limits) as out, CappedLog.open(stderr, **limits) as err:
            result = self._exec(wrapped, timeout=timeout, out=out, err=err)
        if result.timed_out and kill_on_timeout:
            self._kill(f"$(cat {pidfile})", timeout=min(timeout, 5.0))
        return result

    def _capture(
        self, command: str, *, timeout: float, stdin: BinaryIO | None = None
    ) -> tuple[ExecResult, bytes, bytes]:
        half = CAPTURE_LIMIT // 2
        out, err = (CappedLog(io.BytesIO(), head=half, tail=half) for _ in range(2))
        result = self._exec(command, timeout=timeout, out=out, err=err, stdin=stdin)
        return result, _value(out), _value(err)

    def _check(self, command: str, *, timeout: float, stdin: BinaryIO | None = None) -> bytes:
        result, out, err = self._capture(command, timeout=timeout, stdin=stdin)
        if not result.ok:
            what = "timed out" if result.timed_out else f"exit {result.exit_status}"
            detail = err.decode(errors="replace").strip()
            raise SshError(f"guest command {command!r}: {what}: {detail}")
        return out

    def ping(self, timeout: float = 5.0) -> bool:
        """Whether the guest still runs a fresh command within timeout."""
        try:
            result, _, _ = self._capture("true", timeout=timeout)
        except SshError:
            return False
        return result.ok

    def kill_remote(self, pid: int, *, timeout: float = 5.0) -> bool:
        """SIGKILL guest process pid and its process group; best effort.

        False when the guest did not answer.  Commands started by run() lead
        their own process group, and run() kills them itself on timeout.
        """
        return self._kill(str(int(pid)), timeout=timeout)

    def _kill(self, pid_word: str, *, timeout: float) -> bool:
        # pid_word is ours, never the caller's: a number or $(cat pidfile).
        command = f"pid={pid_word}; kill -9 -$pid $pid 2>/dev/null; true"
        try:
            result, _, _ = self._capture(command, timeout=timeout)
        except SshError:
            return False
        return result.ok

    # --- files and the kernel log ---------------------------------------------

    def put(self, local: Path, remote: str, mode: int = 0o644, *, timeout: float = 60.0) -> None:
        """Copy a host file into the guest (written whole, then renamed)."""
        tmp = f"{remote}.orchestrate-tmp"
        command = (
            f"cat > {shlex.quote(tmp)} && chmod {mode:o} {shlex.quote(tmp)} && "
            f"mv -f {shlex.quote(tmp)} {shlex.quote(remote)}"
        )
        with open(local, "rb") as data:
            self._check(command, timeout=timeout, stdin=data)

    def get(self, remote: str, local: Path, *, timeout: float = 60.0) -> None:
        """Copy a guest file to the host."""
        local.parent.mkdir(parents=True, exist_ok=True)
        err = io.BytesIO()
        with open(local, "wb") as out:
            result = self._exec(f"cat {shlex.quote(remote)}", timeout=timeout, out=out, err=err)
        if not result.ok:
            local.unlink(missing_ok=True)
            detail = err.getvalue().decode(errors="replace").strip()
            raise SshError(f"cannot copy {remote} from the guest: {detail or result}")

    def kmsg(self, text: str, *, timeout: float = 5.0) -> None:
        """Write one line into the kernel log, e.g. a test's begin marker.

        At KERN_CRIT, so it reaches the console under any loglevel that still
        shows oopses: a marker the console lacks cannot attribute a splat.
        """
        if "\n" in text or not text:
            raise ValueError(f"a kmsg line must be one non-empty line: {text!r}")
        self._check(f"printf '%s\\n' {shlex.quote('<2>' + text)} > /dev/kmsg", timeout=timeout)

    def dmesg(self, *, timeout: float = 10.0) -> str:
        return self._check("dmesg", timeout=timeout).decode(errors="replace")


def _value(log: CappedLog) -> bytes:
    log.finish()
    assert isinstance(log.stream, io.BytesIO)
    return log.stream.getvalue()


def _send(channel: paramiko.Channel, data: BinaryIO, deadline: float) -> None:
    """Feed data to the command's stdin, then close it (EOF)."""
    while chunk := data.read(READ_SIZE):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("sending stdin timed out")
        # sendall blocks while the guest does not read: never past the deadline.
        channel.settimeout(left)
        channel.sendall(chunk)
    channel.shutdown_write()


def _drain(channel: paramiko.Channel, out: _Sink, err: _Sink) -> bool:
    """Copy one chunk of each stream that has data; whether there was any.

    One chunk, not all: with output arriving as fast as it is read, the
    caller must still get to check its deadline.
    """
    got = False
    if channel.recv_ready():
        out.write(channel.recv(READ_SIZE))
        got = True
    if channel.recv_stderr_ready():
        err.write(channel.recv_stderr(READ_SIZE))
        got = True
    return got


def _pump(channel: paramiko.Channel, out: _Sink, err: _Sink, deadline: float) -> bool:
    """Stream output until the command ends; False when deadline passed first."""
    exited: float | None = None
    while True:
        got = _drain(channel, out, err)
        if not got and (channel.closed or (channel.eof_received and channel.exit_status_ready())):
            break
        now = time.monotonic()
        if channel.exit_status_ready():
            exited = now if exited is None else exited
            if now - exited >= DRAIN_GRACE:
                break
        # Checked on every round, so endless output cannot outrun the timeout.
        if now >= deadline:
            return False
        if not got:
            # The channel's fd wakes on data for either stream and on close.
            select.select([channel], [], [], min(SELECT_INTERVAL, deadline - now))
    # What arrived just before the close; bounded, as a leftover writer may go on.
    end = time.monotonic() + DRAIN_GRACE
    while _drain(channel, out, err) and time.monotonic() < end:
        pass
    out.flush()
    err.flush()
    return True
