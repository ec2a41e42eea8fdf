"""A real `dask scheduler` and `dask worker`s on 127.0.0.1 for the Dask executor's tests.

Each process leads a process group of its own and logs into the cluster's
directory; `stop` SIGKILLs every group and checks that nothing started from
that directory is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import distributed
import psutil

REPO = Path(__file__).resolve().parents[1]
DASK = Path(sys.executable).with_name("dask")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A `dask scheduler` and its `dask worker`s, each its own process group."""

    def __init__(self, tmp: Path, *, preload: str = "") -> None:
        self.tmp = tmp
        self.preload = preload
        self.port = free_port()
        self.address = f"dask://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.marks = tmp / "boots"
        self.marks.mkdir(parents=True)

    def _start(self, argv: list[str], name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        """argv with exactly this environment, logging into the cluster's directory."""
        with (self.tmp / f"{name}.log").open("wb") as log:
            child = subprocess.Popen(
                argv,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(child)
        return child

    def start(self, workers: dict[str, dict[str, str]]) -> None:
        scheduler = ["scheduler", "--host", "127.0.0.1", "--port", str(self.port)]
        # The scheduler unpickles task graphs: it imports orchestrate too.
        here = {**os.environ, "PYTHONPATH": str(REPO)}
        self._start([str(DASK), *scheduler, "--no-dashboard"], "scheduler", here)
        for name, env in workers.items():
            argv = [
                str(DASK), "worker", f"tcp://127.0.0.1:{self.port}", "--name", name,
                "--nthreads", "1", "--resources", "vm=1,build=1", "--no-nanny",
                "--no-dashboard", "--local-directory", str(self.tmp / name),
            ]  # fmt: skip
            if self.preload:
                argv += ["--preload", self.preload]
            marks = {"ORCHESTRATE_TEST_BOOT_MARKS": str(self.marks)}
            self.workers[name] = self._start(argv, name, {**here, **marks, **env})
        self._wait_for(len(workers))

    def _wait_for(self, count: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, TimeoutError):
                client = distributed.Client(f"tcp://127.0.0.1:{self.port}", timeout=5)
                try:
                    client.wait_for_workers(count, timeout=30)
                    return
                finally:
                    client.close()
            time.sleep(0.5)
        raise AssertionError(f"the cluster did not start: see {self.tmp}/*.log")

    def stop(self) -> None:
        for child in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
        left = [p for p in psutil.process_iter(["cmdline"]) if str(self.tmp) in " ".join(
            p.info["cmdline"] or ())]  # fmt: skip
        assert not left, f"left running: {left}"
