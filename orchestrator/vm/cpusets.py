"""How many guests run at once on this machine, and the host CPUs of each.

Pure arithmetic over a :class:`Host` (what :func:`host` reads from the
machine), so it is tested with made-up machines.  A guest of ``c`` vCPUs
gets ``c`` host CPUs of its own; the hyperthreads of one core go to the
same guest, so two guests never share a core.  The default number of
guests is what fits both the CPUs and the available memory, at least one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import psutil

from orchestrator.errors import UserError

# Host memory a guest costs beyond its RAM: QEMU itself, TCG's translation
# cache (it grows as the guest runs new code), the console and SSH buffers.
MARGIN_MB = 512
_SYS_CPU = Path("/sys/devices/system/cpu")

CpuSet = tuple[int, ...]


@dataclass(frozen=True)
class Host:
    cpus: tuple[int, ...]  # the CPUs this process may run on (its affinity mask)
    available_mb: int  # memory available to new processes without swapping
    # cpu -> the CPUs of its physical core (itself included); a CPU not in it is a core alone
    siblings: Mapping[int, frozenset[int]] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Placement:
    """The guests that run at once and the host CPUs of each."""

    vms: int
    sets: tuple[CpuSet, ...]  # one per guest slot; they share CPUs only when warning says so
    warning: str = ""  # said on stderr before the run
    why: str = ""  # how vms was chosen, for `orchestrate plan`


def host() -> Host:
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    available = psutil.virtual_memory().available // (1 << 20)
    return Host(cpus, int(available), MappingProxyType(_siblings(cpus)))


def _siblings(cpus: Sequence[int]) -> dict[int, frozenset[int]]:
    found: dict[int, frozenset[int]] = {}
    for cpu in cpus:
        try:
            text = (_SYS_CPU / f"cpu{cpu}" / "topology" / "thread_siblings_list").read_text()
        except OSError:
            continue  # no topology (a container may hide it): each CPU its own core
        found[cpu] = frozenset(parse_cpu_list(text))
    return found


def parse_cpu_list(text: str) -> list[int]:
    """The kernel's CPU list format ("0-3,8,10-11"), as in Cpus_allowed_list."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        cpus += range(int(first), int(last or first) + 1)
    return cpus


def cpu_list(cpus: Sequence[int]) -> str:
    """The comma list taskset's --cpu-list takes."""
    return ",".join(str(c) for c in cpus)


def disjoint(sets: Sequence[CpuSet]) -> bool:
    """Whether no CPU is in two sets: then perf rounds may run one per set."""
    return len({c for s in sets for c in s}) == sum(len(s) for s in sets)


def fitting(host: Host, vcpus: int, memory_mb: int) -> tuple[int, int]:
    """(guests the CPUs fit, guests the memory fits), each at least 0."""
    by_cpus = len(host.cpus) // max(1, vcpus)
    by_memory = host.available_mb // (memory_mb + MARGIN_MB)
    return by_cpus, by_memory


def default_vms(host: Host, vcpus: int, memory_mb: int) -> int:
    by_cpus, by_memory = fitting(host, vcpus, memory_mb)
    return max(1, min(by_cpus, by_memory))


def _core_order(host: Host) -> list[int]:
    """The allowed CPUs with the hyperthreads of each core next to each other."""
    allowed = set(host.cpus)

    def core(cpu: int) -> int:
        return min(host.siblings.get(cpu, frozenset()) & allowed, default=cpu)

    return sorted(host.cpus, key=lambda cpu: (core(cpu), cpu))


def cpu_sets(host: Host, vcpus: int, vms: int) -> tuple[CpuSet, ...]:
    """`vms` sets of `vcpus` CPUs each, disjoint while they fit; beyond that they
    wrap around (shared CPUs), and a guest bigger than the machine gets all of it."""
    order = _core_order(host)
    width = max(1, vcpus)
    if width >= len(order):
        return tuple(tuple(sorted(order)) for _ in range(vms))
    chunks = [order[i : i + width] for i in range(0, len(order) - width + 1, width)]
    return tuple(tuple(sorted(chunks[i % len(chunks)])) for i in range(vms))


def place(wanted: int | None, host: Host, vcpus: int, memory_mb: int) -> Placement:
    """`--vms N` (None: the default) checked against the machine.

    More guests than the CPUs fit is allowed with a warning: their CPU sets
    overlap, which slows functional tests but does not change what they
    find, and perf rounds then take the whole machine.  More than the
    memory fits is a UserError: the host's OOM killer ending a QEMU looks,
    in the results, like a kernel that died, which is a wrong verdict.
    """
    by_cpus, by_memory = fitting(host, vcpus, memory_mb)
    need = f"{memory_mb} MiB + {MARGIN_MB} MiB each"
    if wanted is None:
        vms = default_vms(host, vcpus, memory_mb)
        why = (
            f"default: {len(host.cpus)} CPUs / {vcpus} vCPUs = {by_cpus}, "
            f"{host.available_mb} MiB available / ({need}) = {by_memory}"
        )
    else:
        vms, why = wanted, "--vms"
    if vms > 1 and vms > by_memory:
        raise UserError(
            f"--vms {vms}: {vms} guests need {vms * (memory_mb + MARGIN_MB)} MiB "
            f"({need}) but {host.available_mb} MiB is available; at most {max(1, by_memory)}"
        )
    warning = ""
    if vms > max(1, by_cpus):
        warning = (
            f"--vms {vms}: {vms} guests of {vcpus} vCPUs do not fit on {len(host.cpus)} CPUs "
            f"without sharing; their CPU sets overlap"
        )
    return Placement(vms, cpu_sets(host, vcpus, vms), warning, why)
