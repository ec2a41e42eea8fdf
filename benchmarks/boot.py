"""Boot time under the project's guest: QEMU start → console ready marker and
→ SSH login, median of N boots, with the default matrix's upstream kernel.

    python benchmarks/boot.py [--boots 10] [--accel tcg] [--cache-dir DIR]

Runs the default matrix's build first (a no-op when it is cached) to find the
kernel.  Goal: SSH ready <= 2.0 s median under TCG on the 2-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from orchestrator.cache import Cache, default_root
from orchestrator.config import load
from orchestrator.results import Stage, Status
from orchestrator.runner import Options, Runner, collect_series
from orchestrator.vm import guest, image, programs, qemu

REPO = Path(__file__).resolve().parents[1]


def kernel(cache: Cache, work: Path) -> Path:
    """The default matrix's upstream vmlinux, built (or found) by the runner."""
    matrix = load(REPO / "matrix.yaml")
    only = ("upstream",)
    options = Options(cache=cache, run_dir=work, only=only, until=Stage.BUILD)
    run = Runner(matrix, options, lambda *_: None).run(collect_series(matrix, only))
    (variant,) = run.variants
    stage = variant.stage(Stage.BUILD)
    assert stage is not None and stage.status is Status.PASS and variant.build, variant
    return Path(variant.build.artifact_dir) / "vmlinux"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=10)
    parser.add_argument("--accel", default="tcg", choices=("tcg", "kvm"))
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=default_root())
    args = parser.parse_args()
    cache = Cache(args.cache_dir)
    with tempfile.TemporaryDirectory(prefix="boot-bench-") as tmp:
        work = Path(tmp)
        vmlinux = kernel(cache, work / "run")
        keys = image.make_keys(work / "keys")
        built = programs.build(REPO / "selftests", cache.root, work / "selftests.log")
        initrd = image.concatenate(
            image.image(cache.root, keys, built.files(), work), work / "initrd.cpio"
        )
        console, ssh = [], []
        for i in range(args.boots):
            spec = qemu.VmSpec(
                kernel=vmlinux, initrd=initrd, cpus=args.cpus, memory_mb=1024,
                accel=args.accel, cmdline_extra="", console_log=work / f"console-{i}.log",
                qmp_socket=work / f"qmp-{i}", ssh_port=qemu.free_port(),
            )  # fmt: skip
            start = time.monotonic()
            with guest.boot(spec, keys, boot_timeout=60) as (session, booted):
                assert session.ping()
            console.append(booted.console_ready)
            ssh.append(booted.seconds)
            total = time.monotonic() - start
            print(f"boot {i + 1}: console ready {booted.console_ready:.2f} s, "
                  f"SSH ready {booted.seconds:.2f} s, with teardown {total:.2f} s")  # fmt: skip
    print(f"\n{args.accel}, {args.cpus} vCPUs, {args.boots} boots, kernel {vmlinux}")
    print(f"console ready marker: median {statistics.median(console):.2f} s "
          f"(min {min(console):.2f}, max {max(console):.2f})")  # fmt: skip
    print(f"SSH ready:            median {statistics.median(ssh):.2f} s "
          f"(min {min(ssh):.2f}, max {max(ssh):.2f})  goal <= 2.0 s")  # fmt: skip


if __name__ == "__main__":
    main()
