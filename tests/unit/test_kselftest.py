"""The pure parts of kselftest: guest commands, make argv, the first error of a log."""

from __future__ import annotations

import shlex
from pathlib import Path

from orchestrator import suites
from orchestrator.matrix import Test
from orchestrator.suites import kselftest
from orchestrator.suites.kselftest import Options as Kselftest
from orchestrator.vm.run_test import command_for


def test_guest_command_runs_the_program_from_its_directory() -> None:
    selftest = Kselftest(filter="htab,htab_reuse/*")
    assert kselftest.guest_command(selftest) == (
        "cd /opt/kselftests/bpf && exec ./test_progs -t 'htab,htab_reuse/*' 2>&1"
    )
    denied = Kselftest(filter="*", deny="tc_redirect")
    assert shlex.split(kselftest.guest_command(denied))[4:] == [
        "./test_progs", "-t", "*", "-d", "tc_redirect", "2>&1",
    ]  # fmt: skip


def test_a_kselftest_test_ignores_ktap_style_args() -> None:
    test = Test(
        name="bpf_htab",
        kind="kselftest",
        args=(("filter", "htab"),),
        options=Kselftest(filter="htab"),
    )
    assert command_for(test) == "cd /opt/kselftests/bpf && exec ./test_progs -t htab 2>&1"


def test_collections_in_order_of_first_use() -> None:
    tests = [
        Test(name="a", kind="kselftest", options=Kselftest(filter="a")),
        Test(name="smoke", kind="ktap", command="/x"),
        Test(name="b", kind="kselftest", options=Kselftest(filter="b")),
    ]
    assert kselftest.collections(tests) == ("bpf/test_progs",)
    assert kselftest.collections(tests[1:2]) == ()


def test_make_argv_names_the_variants_kernel() -> None:
    kernel = suites.Kernel(Path("/w/src"), Path("/w/out"), Path("/a/vmlinux"), "abc-def")
    argv = kselftest.make_argv(kernel, "bpf/test_progs", Path("/c/build"), 2)
    assert argv == [
        "make", "-C", "/w/src/tools/testing/selftests/bpf", "-j2",
        "OUTPUT=/c/build", "VMLINUX_BTF=/a/vmlinux", "KDIR=/w/out", "/c/build/test_progs",
    ]  # fmt: skip


def test_first_error_prefers_the_cause_over_makes_summary() -> None:
    log = "\n".join(
        [
            "  GEN      vmlinux.h",
            "libbpf: failed to find '.BTF' ELF section in /a/vmlinux",
            "Error: failed to load BTF from /a/vmlinux: No data available",
            "make: *** [Makefile:286: /c/build/tools/include/vmlinux.h] Error 195",
        ]
    )
    assert kselftest.first_error(log) == "libbpf: failed to find '.BTF' ELF section in /a/vmlinux"
    no_vmlinux = (
        'Makefile:143: *** Cannot find a vmlinux for VMLINUX_BTF at any of "/x".  Stop.\n'
        "make: Leaving directory '/w/src/tools/testing/selftests/bpf'\n"
    )
    assert kselftest.first_error(no_vmlinux).startswith("Makefile:143: *** Cannot find a vmlinux")
    compiler = "progs/x.c:3:5: error: 'boom' undeclared\nmake: *** [x] Error 1\n"
    assert kselftest.first_error(compiler) == "progs/x.c:3:5: error: 'boom' undeclared"
    linker = (  # what 6.1's Makefile says on a host without lld
        "  LIB      liburandom_read.so\n"
        "clang: error: invalid linker name in argument '-fuse-ld=lld'\n"
        "make: *** [Makefile:181: /c/build/liburandom_read.so] Error 1\n"
    )
    assert (
        kselftest.first_error(linker)
        == "clang: error: invalid linker name in argument '-fuse-ld=lld'"
    )
    assert kselftest.first_error("make: *** [all] Error 2\n") == "make: *** [all] Error 2"
    assert kselftest.first_error("") == "make failed with no output"


def test_installed_errors_by_collection() -> None:
    installed = suites.Installed(errors=(("bpf/test_progs", "no BTF"),))
    assert installed.error("bpf/test_progs") == "no BTF"
    assert suites.Installed().error("bpf/test_progs") is None
