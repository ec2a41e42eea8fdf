"""The SSH transport's pure parts and its behaviour against local fake servers.
The real guest is in tests/e2e/test_guest.py."""

from __future__ import annotations

import base64
import collections
import contextlib
import io
import os
import shlex
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from orchestrator import proc
from orchestrator.vm import image, ssh
from orchestrator.vm.console import CappedLog
from orchestrator.vm.ssh import ExecResult, SshError, SshTransport


def ed25519_public(seed: int) -> str:
    """An "ssh-ed25519 <base64>" line with a made-up 32-byte key."""
    blob = b"".join(len(p).to_bytes(4, "big") + p for p in (b"ssh-ed25519", bytes([seed]) * 32))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()}"


def test_host_key_from_public_line() -> None:
    key = ssh.host_key(ed25519_public(7) + " comment")
    assert key.get_name() == "ssh-ed25519"
    assert key.asbytes().endswith(bytes([7]) * 32)
    with pytest.raises(ValueError, match="not an ed25519"):
        ssh.host_key("ssh-rsa AAAA")


def test_exec_result_ok() -> None:
    assert ExecResult(0, False, 1.0).ok
    assert not ExecResult(1, False, 1.0).ok
    assert not ExecResult(None, True, 1.0).ok


def test_job_command_runs_the_command_as_a_group_leader_and_records_it(tmp_path: Path) -> None:
    hostile = "$(echo pwned); `id`; 'quote\" \\"
    pidfile = tmp_path / "job 1.pid"
    command = f"printf '%s\\n' {shlex.quote(hostile)}; cat /proc/self/stat"
    wrapped = ssh.job_command(command, str(pidfile))
    # As in the guest: sshd's shell is no process group leader (proc.run's
    # child is one, so one more shell level, kept by the trailing "true").
    result = proc.run(["sh", "-c", 'sh -c "$1"; true', "sh", wrapped], timeout=30).check()
    printed, stat = result.stdout.splitlines()
    assert printed == hostile
    pid = int(pidfile.read_text())
    fields = stat.rsplit(")", 1)[1].split()
    # pgrp and session of cat, a child of the command: the recorded pid.
    assert (int(fields[2]), int(fields[3])) == (pid, pid)


@pytest.fixture()
def tcp_server() -> Iterator[tuple[socket.socket, int]]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server, server.getsockname()[1]
    server.close()


def serve(server: socket.socket, greeting: bytes) -> None:
    """Accept connections in a thread; send greeting and hang up."""

    def loop() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(greeting)

    threading.Thread(target=loop, daemon=True).start()


def test_banner_probe(tcp_server: tuple[socket.socket, int]) -> None:
    server, port = tcp_server
    # Like QEMU's user network while the guest's sshd is down: accepts, says nothing.
    serve(server, b"")
    assert not ssh.banner_ready("127.0.0.1", port, 1.0)
    assert not ssh.banner_ready("127.0.0.1", ssh_free_port(), 1.0)


def test_banner_probe_sees_ssh(tcp_server: tuple[socket.socket, int]) -> None:
    server, port = tcp_server
    serve(server, b"SSH-2.0-dropbear\r\n")
    assert ssh.banner_ready("127.0.0.1", port, 1.0)


def ssh_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> image.Keys:
    return image.make_keys(tmp_path_factory.mktemp("keys"))


def test_connect_gives_up_quietly_at_the_timeout(
    tcp_server: tuple[socket.socket, int], keys: image.Keys, capfd: pytest.CaptureFixture[str]
) -> None:
    server, port = tcp_server
    # A banner, then the connection drops: paramiko fails and logs about it.
    serve(server, b"SSH-2.0-broken\r\n")
    start = time.monotonic()
    with pytest.raises(SshError, match="no SSH login"):
        SshTransport.connect(port=port, keys=keys, timeout=1.5)
    assert 1.4 < time.monotonic() - start < 5
    time.sleep(0.2)  # paramiko's threads log late
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "paramiko" not in out + err


class _Server(paramiko.ServerInterface):
    def get_allowed_auths(self, username: str) -> str:
        return "publickey"


def test_unknown_host_key_is_rejected_at_once(
    tcp_server: tuple[socket.socket, int], keys: image.Keys, tmp_path: Path
) -> None:
    server, port = tcp_server
    # An sshd whose host key is not the pinned one.
    keygen: list[str | Path] = [
        "ssh-keygen",
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-f",
        tmp_path / "hk",
    ]
    proc.run(keygen, timeout=30).check()
    host_key = paramiko.Ed25519Key.from_private_key_file(str(tmp_path / "hk"))

    def answer() -> None:
        # The first connection is connect()'s banner probe, then paramiko's.
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.set_log_channel(ssh.PARAMIKO_LOG)
            transport.add_server_key(host_key)
            # The client hangs up on a host key it refuses: a reset is the expected end.
            with contextlib.suppress(paramiko.SSHException, EOFError, OSError):
                transport.start_server(server=_Server())

    threading.Thread(target=answer, daemon=True).start()
    start = time.monotonic()
    with pytest.raises(SshError, match="does not match"):
        SshTransport.connect(port=port, keys=keys, timeout=20)
    assert time.monotonic() - start < 5


def test_unconnected_transport() -> None:
    transport = SshTransport(paramiko.SSHClient())
    assert not transport.active
    assert not transport.ping(timeout=1)
    assert not transport.kill_remote(1234, timeout=1)
    with pytest.raises(ValueError, match="one non-empty line"):
        transport.kmsg("orchestrate: begin test a\nb")
    with pytest.raises(SshError, match="closed"):
        transport.dmesg()


# --- the output pump against a fake channel ---------------------------------


class FakeChannel:
    """Delivers scripted (stdout, stderr) chunks, then an exit status."""

    def __init__(self, chunks: list[tuple[bytes, bytes]], exits: bool, eof: bool) -> None:
        self.chunks = collections.deque(chunks)
        self.exits = exits
        self.eof = eof
        self.closed = False
        self._read, self._write = os.pipe()  # never readable: select just waits

    def fileno(self) -> int:
        return self._read

    def recv_ready(self) -> bool:
        return bool(self.chunks and self.chunks[0][0])

    def recv_stderr_ready(self) -> bool:
        return bool(self.chunks and self.chunks[0][1])

    def recv(self, size: int) -> bytes:
        out, err = self.chunks[0]
        self.chunks[0] = (b"", err)
        self._pop()
        return out

    def recv_stderr(self, size: int) -> bytes:
        out, err = self.chunks[0]
        self.chunks[0] = (out, b"")
        self._pop()
        return err

    def _pop(self) -> None:
        if self.chunks[0] == (b"", b""):
            self.chunks.popleft()

    def exit_status_ready(self) -> bool:
        return self.exits and not self.chunks

    @property
    def eof_received(self) -> bool:
        return self.eof and not self.chunks

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)


def pump(channel: FakeChannel, timeout: float) -> tuple[bool, bytes, bytes, float]:
    out, err = io.BytesIO(), io.BytesIO()
    start = time.monotonic()
    done = ssh._pump(channel, out, err, start + timeout)  # type: ignore[arg-type]
    channel.close()
    return done, out.getvalue(), err.getvalue(), time.monotonic() - start


def test_pump_streams_both_outputs_until_exit() -> None:
    channel = FakeChannel([(b"a", b""), (b"b", b"x"), (b"", b"y")], exits=True, eof=True)
    done, out, err, took = pump(channel, 5)
    assert (done, out, err) == (True, b"ab", b"xy")
    assert took < 0.5


def test_pump_times_out() -> None:
    done, out, _, took = pump(FakeChannel([(b"partial", b"")], exits=False, eof=False), 0.3)
    assert (done, out) == (False, b"partial")
    assert 0.3 <= took < 1


def test_pump_does_not_wait_for_eof_held_by_a_leftover_process() -> None:
    done, _, _, took = pump(FakeChannel([], exits=True, eof=False), 10)
    assert done
    assert ssh.DRAIN_GRACE <= took < ssh.DRAIN_GRACE + 0.5


def test_pump_times_out_on_endless_output() -> None:
    channel = FakeChannel([(b"y\n", b"")] * 10**6, exits=False, eof=False)
    done, out, _, took = pump(channel, 0.3)
    assert not done and out.startswith(b"y\ny\n")
    assert took < 1


def test_pump_stops_after_the_grace_when_output_goes_on_after_exit() -> None:
    channel = FakeChannel([(b"y\n", b"")] * 10**6, exits=True, eof=False)
    channel.exit_status_ready = lambda: True  # type: ignore[method-assign]
    done, _, _, took = pump(channel, 10)
    assert done
    assert took < 2 * ssh.DRAIN_GRACE + 0.5


# --- bounded output -------------------------------------------------------------


def test_pump_into_capped_logs_keeps_the_head_and_the_tail() -> None:
    lines = [b"%06d\n" % i for i in range(20000)]
    channel = FakeChannel([(line, b"e") for line in lines], exits=True, eof=True)
    out = CappedLog(io.BytesIO(), head=700, tail=700, slack=300)
    err = CappedLog(io.BytesIO(), head=10, tail=10)
    assert ssh._pump(channel, out, err, time.monotonic() + 30)  # type: ignore[arg-type]
    channel.close()
    out.finish()
    data = out.stream.getvalue()  # type: ignore[attr-defined]
    assert data.startswith(b"000000\n") and data.endswith(b"019999\n")
    assert b"[orchestrate: %d bytes dropped here]\n" % out.dropped in data
    assert len(data) <= 700 + 700 + 64 and out.written == 7 * 20000
    assert err.written == 20000


class Flood:
    """Stands in for _exec: the guest command prints `size` bytes to each stream."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, command: str, *, timeout: float, out: ssh._Sink, err: ssh._Sink,
                 stdin: object = None) -> ExecResult:  # fmt: skip
        block = b"".join(b"%07d\n" % i for i in range(8192))
        for _ in range(self.size // len(block)):
            out.write(block)
            err.write(block)
        return ExecResult(0, False, 0.1)


def test_a_tests_output_files_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    transport = SshTransport(None)  # type: ignore[arg-type]
    monkeypatch.setattr(transport, "_exec", Flood(20 * 1024 * 1024))
    out, err = tmp_path / "t.stdout", tmp_path / "t.stderr"
    assert transport.run("flood", timeout=10, stdout=out, stderr=err).ok
    for path in (out, err):
        data = path.read_bytes()
        assert len(data) <= ssh.OUTPUT_HEAD + ssh.OUTPUT_TAIL + 64
        assert data.startswith(b"0000000\n") and data.endswith(b"0008191\n")
        assert b" bytes dropped here]\n" in data


def test_the_transports_own_commands_keep_bounded_output(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = SshTransport(None)  # type: ignore[arg-type]
    monkeypatch.setattr(transport, "_exec", Flood(8 * 1024 * 1024))
    result, out, err = transport._capture("dmesg", timeout=10)
    assert result.ok
    assert len(out) <= ssh.CAPTURE_LIMIT + 64 and len(err) <= ssh.CAPTURE_LIMIT + 64
    assert out.endswith(b"0008191\n")


def _server(behaviour: str) -> tuple[socket.socket, threading.Thread]:
    """A loopback server that answers like sshd ("banner"), like a guest kernel
    with nothing listening ("reset": accepted, then closed at once) or like a
    hung guest ("silent": accepted, then nothing)."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        if behaviour == "banner":
            conn.sendall(b"SSH-2.0-dropbear\r\n")
        if behaviour in ("banner", "silent"):
            time.sleep(1.5)
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


@pytest.mark.parametrize(("behaviour", "refused"), [("banner", False), ("reset", True),
                                                    ("silent", False)])  # fmt: skip
def test_sshd_refused_tells_a_dead_sshd_from_a_hung_guest(behaviour: str, refused: bool) -> None:
    server, thread = _server(behaviour)
    with server:
        assert ssh.sshd_refused(server.getsockname()[1], timeout=0.5) is refused
        thread.join()


def test_a_port_nobody_listens_on_is_refused() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    assert ssh.sshd_refused(port, timeout=0.5) is True
