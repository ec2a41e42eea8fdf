"""CPU sets and the number of guests at once, on made-up machines."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from orchestrator.errors import UserError
from orchestrator.vm import cpusets
from orchestrator.vm.cpusets import MARGIN_MB, Host


def machine(cpus: int, memory_mb: int = 64 * 1024, smt: bool = False) -> Host:
    """cpus CPUs; with smt, CPU i and i + cpus/2 are the two threads of one core (Intel's
    numbering)."""
    siblings = {}
    if smt:
        half = cpus // 2
        for core in range(half):
            pair = frozenset({core, core + half})
            siblings[core] = siblings[core + half] = pair
    return Host(tuple(range(cpus)), memory_mb, MappingProxyType(siblings))


def test_default_is_cores_over_vcpus_when_memory_is_plenty() -> None:
    assert cpusets.default_vms(machine(8), vcpus=2, memory_mb=1024) == 4
    assert cpusets.default_vms(machine(2), vcpus=1, memory_mb=1024) == 2
    assert cpusets.default_vms(machine(9), vcpus=2, memory_mb=1024) == 4


def test_default_is_what_memory_fits_when_that_is_fewer() -> None:
    tight = machine(16, memory_mb=3 * (1024 + MARGIN_MB) + 100)
    assert cpusets.default_vms(tight, vcpus=1, memory_mb=1024) == 3


def test_default_is_at_least_one() -> None:
    assert cpusets.default_vms(machine(2), vcpus=4, memory_mb=1024) == 1
    assert cpusets.default_vms(machine(8, memory_mb=100), vcpus=1, memory_mb=1024) == 1


def test_sets_are_disjoint_and_cover_the_guests_vcpus() -> None:
    assert cpusets.cpu_sets(machine(8), vcpus=2, vms=4) == ((0, 1), (2, 3), (4, 5), (6, 7))
    assert cpusets.cpu_sets(machine(5), vcpus=2, vms=2) == ((0, 1), (2, 3))


def test_hyperthreads_of_a_core_go_to_one_guest() -> None:
    # 4 cores, 8 threads: CPU 0 and 4 share core 0, 1 and 5 core 1, ...
    sets = cpusets.cpu_sets(machine(8, smt=True), vcpus=2, vms=4)
    assert sets == ((0, 4), (1, 5), (2, 6), (3, 7))


def test_only_the_cpus_this_process_may_use_are_handed_out() -> None:
    host = Host((2, 3, 6, 7), 64 * 1024)
    assert cpusets.cpu_sets(host, vcpus=1, vms=4) == ((2,), (3,), (6,), (7,))
    assert cpusets.default_vms(host, vcpus=2, memory_mb=1024) == 2


def test_more_guests_than_the_cpus_fit_is_a_warning_and_sets_wrap_around() -> None:
    placed = cpusets.place(3, machine(2), vcpus=1, memory_mb=1024)
    assert placed.vms == 3
    assert placed.sets == ((0,), (1,), (0,))
    assert "do not fit on 2 CPUs" in placed.warning


def test_a_guest_bigger_than_the_machine_gets_all_of_it() -> None:
    placed = cpusets.place(2, machine(2), vcpus=4, memory_mb=1024)
    assert placed.sets == ((0, 1), (0, 1)) and placed.warning


def test_more_guests_than_the_memory_fits_is_a_user_error() -> None:
    host = machine(16, memory_mb=2 * (1024 + MARGIN_MB))
    assert cpusets.place(2, host, vcpus=1, memory_mb=1024).warning == ""
    with pytest.raises(UserError, match=r"--vms 3: 3 guests need 4608 MiB .* at most 2"):
        cpusets.place(3, host, vcpus=1, memory_mb=1024)


def test_one_guest_is_never_refused() -> None:
    # As before --vms: a single guest on a machine short of memory is the user's call.
    placed = cpusets.place(1, machine(1, memory_mb=10), vcpus=2, memory_mb=1024)
    assert (placed.vms, placed.sets, placed.warning) == (1, ((0,),), "")


def test_the_default_says_how_it_was_chosen() -> None:
    placed = cpusets.place(None, machine(4, memory_mb=6000), vcpus=2, memory_mb=1024)
    assert placed.vms == 2 and placed.sets == ((0, 1), (2, 3)) and placed.warning == ""
    assert placed.why == (
        f"default: 4 CPUs / 2 vCPUs = 2, 6000 MiB available / (1024 MiB + {MARGIN_MB} MiB each) = 3"
    )


def test_cpu_lists_read_and_written() -> None:
    assert cpusets.parse_cpu_list("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert cpusets.parse_cpu_list("5") == [5]
    assert cpusets.cpu_list((1, 3)) == "1,3"


def test_this_machine_is_read() -> None:
    host = cpusets.host()
    assert host.cpus and host.available_mb > 0
    assert all(cpu in host.siblings.get(cpu, {cpu}) for cpu in host.cpus)


def test_perf_rounds_run_side_by_side_only_on_disjoint_sets() -> None:
    assert cpusets.disjoint(((0,), (1,)))
    assert cpusets.disjoint(((0, 1), (2, 3)))
    assert not cpusets.disjoint(((0, 1), (1, 2)))
    assert not cpusets.disjoint(((0, 1), (0, 1)))  # wrapped around: more guests than CPUs
