"""The kconfig stage: pure merging/verification, dependency reasons, real make."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from orchestrator import proc
from orchestrator.errors import UserError
from orchestrator.git import git
from orchestrator.kernel import kconfig, kconfig_deps
from orchestrator.results import KconfigMismatch
from orchestrator.sandbox import PLAIN

REPO = Path(__file__).resolve().parents[2]


# --- parse / render -----------------------------------------------------------

DOTCONFIG = """\
#
# Automatically generated file; DO NOT EDIT.
# Linux/x86 6.1.192 Kernel Configuration
#
CONFIG_CC_VERSION_TEXT="gcc (Debian 12.2.0-14) 12.2.0"
CONFIG_64BIT=y
# CONFIG_SMP is not set
CONFIG_NR_CPUS=1
CONFIG_PHYSICAL_START=0x1000000
CONFIG_VIRTIO_NET=m

# General setup
CONFIG_LOCALVERSION=""
"""


def test_parse_keeps_values_as_written() -> None:
    assert kconfig.parse(DOTCONFIG) == {
        "CONFIG_CC_VERSION_TEXT": '"gcc (Debian 12.2.0-14) 12.2.0"',
        "CONFIG_64BIT": "y",
        "CONFIG_SMP": "n",
        "CONFIG_NR_CPUS": "1",
        "CONFIG_PHYSICAL_START": "0x1000000",
        "CONFIG_VIRTIO_NET": "m",
        "CONFIG_LOCALVERSION": '""',
    }


def test_parse_rejects_a_line_that_is_not_kconfig() -> None:
    with pytest.raises(UserError, match=r"frag.config:2: not a kconfig line: 'CONFIG_BPF y'"):
        kconfig.parse("CONFIG_NET=y\nCONFIG_BPF y\n", source="frag.config")


def test_render_round_trips() -> None:
    values = kconfig.parse(DOTCONFIG)
    text = kconfig.render(values)
    assert "# CONFIG_SMP is not set\n" in text
    assert 'CONFIG_LOCALVERSION=""\n' in text
    assert kconfig.parse(text) == values
    assert list(kconfig.parse(text)) == list(values)


def test_hash_ignores_comments_and_order() -> None:
    reordered = "CONFIG_64BIT=y\n# another header\n" + DOTCONFIG.replace("CONFIG_64BIT=y\n", "")
    assert kconfig.config_hash(reordered) == kconfig.config_hash(DOTCONFIG)
    changed = DOTCONFIG.replace("CONFIG_NR_CPUS=1", "CONFIG_NR_CPUS=2")
    assert kconfig.config_hash(changed) != kconfig.config_hash(DOTCONFIG)


# --- merge / verify -----------------------------------------------------------

BASE_FRAG = "kconfigs/base.config"
DEBUG_FRAG = "kconfigs/debug.config"


def test_merge_later_fragments_win_with_notes() -> None:
    base = {"CONFIG_A": "n", "CONFIG_X": "y", "CONFIG_SLOB": "y"}
    merged, notes = kconfig.merge(
        base,
        [
            (BASE_FRAG, {"CONFIG_X": "n", "CONFIG_A": "y"}),
            (DEBUG_FRAG, {"CONFIG_X": "y", "CONFIG_A": "y", "CONFIG_NEW": '"s"'}),
        ],
    )
    assert merged == {
        "CONFIG_SLOB": "y",
        "CONFIG_X": "y",
        "CONFIG_A": "y",
        "CONFIG_NEW": '"s"',
    }
    # Only the real override between fragments is news; A was set twice to y.
    assert notes == (f"{DEBUG_FRAG} overrides CONFIG_X=n from {BASE_FRAG} with y",)
    assert base == {"CONFIG_A": "n", "CONFIG_X": "y", "CONFIG_SLOB": "y"}


def test_merge_puts_fragment_values_after_the_base() -> None:
    # kconfig keeps the last `=y` of a choice, so SLUB must follow SLOB.
    base = {"CONFIG_SLUB": "n", "CONFIG_SLOB": "y"}
    merged, _ = kconfig.merge(base, [(BASE_FRAG, {"CONFIG_SLUB": "y"})])
    assert kconfig.render(merged) == "CONFIG_SLOB=y\nCONFIG_SLUB=y\n"


def reason(symbol: str) -> str:
    return f"because of {symbol}"


def test_verify_reports_a_value_that_did_not_stick() -> None:
    requested = [(BASE_FRAG, {"CONFIG_NET": "y", "CONFIG_BPF_JIT": "y"})]
    final = {"CONFIG_NET": "y"}
    assert kconfig.verify(requested, final, reason) == (
        KconfigMismatch(
            symbol="CONFIG_BPF_JIT",
            wanted="y",
            got="n",
            fragment=BASE_FRAG,
            reason="because of CONFIG_BPF_JIT",
        ),
    )


def test_verify_accepts_unset_for_n() -> None:
    requested = [(BASE_FRAG, {"CONFIG_SLOB": "n", "CONFIG_SMP": "n"})]
    assert kconfig.verify(requested, {"CONFIG_SMP": "n"}, reason) == ()


def test_verify_compares_with_the_last_fragment() -> None:
    requested = [
        (BASE_FRAG, {"CONFIG_KASAN": "n", "CONFIG_HZ": "250"}),
        (DEBUG_FRAG, {"CONFIG_KASAN": "y"}),
    ]
    final = {"CONFIG_KASAN": "n", "CONFIG_HZ": "250"}
    (mismatch,) = kconfig.verify(requested, final, reason)
    assert (mismatch.symbol, mismatch.wanted, mismatch.got, mismatch.fragment) == (
        "CONFIG_KASAN",
        "y",
        "n",
        DEBUG_FRAG,
    )
    assert kconfig.verify(requested, {"CONFIG_KASAN": "y", "CONFIG_HZ": "250"}, reason) == ()


# --- kconfig_deps.dependency_reason on a fake tree (not git: the walk fallback) ------------


def write(root: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


FAKE_TREE = {
    "Kconfig": """\
        mainmenu "Fake"

        source "init/Kconfig"
        source "arch/Kconfig"
        """,
    "init/Kconfig": """\
        config BAR
        \tbool "bar"

        config FOO
        \tbool "foo"
        \tdepends on BAR && BAZ
        \thelp
        \t  FOO needs BAR and BAZ.
        \t  if you read this, the help text was parsed as a statement.
        \t  config HELP_IS_NOT_CONFIG

        config EXPERTISH
        \tbool "expertish" if EXPERT
        \tdefault y

        config SELECTED_ONLY
        \tbool

        choice
        \tprompt "Slab allocator"
        \tdefault SLUB

        config SLUB
        \tbool "SLUB"

        config SLOB
        \tbool "SLOB"
        \tdepends on EXPERT

        endchoice

        menuconfig NET
        \tbool "Networking"

        if NET

        menu "Protocols"
        \tdepends on !TINY

        config UNIX
        \ttristate "Unix sockets"
        \tdepends on (MMU || \\
        \t\tNOMMU_OK)

        endmenu

        endif # NET

        config AFTER_NET
        \tbool "after"
        """,
    "arch/Kconfig": """\
        config KPROBES
        \tbool "Kprobes"
        \tdepends on MODULES
        """,
    "arch/x86/Kconfig": """\
        config SMP
        \tbool "SMP"
        \tdepends on X86_LOCAL_APIC
        """,
    "arch/arm/Kconfig": """\
        config SMP
        \tbool "SMP"
        \tdepends on CPU_V6K
        """,
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write(tmp_path / "linux", FAKE_TREE)


def test_reason_lists_dependencies(tree: Path) -> None:
    assert kconfig_deps.dependency_reason(tree, "CONFIG_FOO") == (
        "defined in init/Kconfig:4; depends on BAR && BAZ"
    )


def test_reason_names_unmet_dependencies_from_the_final_config(tree: Path) -> None:
    final = {"CONFIG_BAR": "y"}
    assert kconfig_deps.dependency_reason(tree, "CONFIG_FOO", final=final) == (
        "defined in init/Kconfig:4; depends on BAR && BAZ; not met: BAZ"
    )


def test_reason_skips_help_text(tree: Path) -> None:
    assert (
        kconfig_deps.dependency_reason(tree, "HELP_IS_NOT_CONFIG") == "no such symbol in this tree"
    )
    # The "if you read this" line in FOO's help did not open an if block.
    assert kconfig_deps.dependency_reason(tree, "EXPERTISH") == (
        "defined in init/Kconfig:12; settable only if EXPERT"
    )


def test_reason_for_an_unknown_symbol(tree: Path) -> None:
    assert kconfig_deps.dependency_reason(tree, "CONFIG_NOPE") == "no such symbol in this tree"


def test_reason_for_a_choice(tree: Path) -> None:
    assert kconfig_deps.dependency_reason(tree, "CONFIG_SLUB") == (
        'defined in init/Kconfig:23; in choice "Slab allocator" (another option may be selected)'
    )
    final = {"CONFIG_SLOB": "y", "CONFIG_EXPERT": "y"}
    assert kconfig_deps.dependency_reason(tree, "CONFIG_SLUB", final=final) == (
        'defined in init/Kconfig:23; in choice "Slab allocator" (CONFIG_SLOB is selected)'
    )


def test_reason_for_a_promptless_symbol(tree: Path) -> None:
    assert kconfig_deps.dependency_reason(tree, "SELECTED_ONLY") == (
        "defined in init/Kconfig:16; no prompt (it is only set by a default or a select)"
    )


def test_reason_includes_enclosing_if_and_menu(tree: Path) -> None:
    final = {"CONFIG_NET": "y", "CONFIG_MMU": "y", "CONFIG_TINY": "y"}
    assert kconfig_deps.dependency_reason(tree, "CONFIG_UNIX", final=final) == (
        "defined in init/Kconfig:40; depends on NET && !TINY && (MMU || NOMMU_OK); not met: !TINY"
    )
    # endif and endmenu closed the blocks again.
    assert kconfig_deps.dependency_reason(tree, "AFTER_NET") == "defined in init/Kconfig:49"


def test_reason_ignores_other_architectures(tree: Path) -> None:
    assert kconfig_deps.dependency_reason(tree, "SMP") == (
        "defined in arch/x86/Kconfig:1; depends on X86_LOCAL_APIC"
    )
    assert kconfig_deps.dependency_reason(tree, "SMP", srcarch="arm") == (
        "defined in arch/arm/Kconfig:1; depends on CPU_V6K"
    )
    # arch/Kconfig itself is common to all architectures.
    assert kconfig_deps.dependency_reason(tree, "KPROBES") == (
        "defined in arch/Kconfig:1; depends on MODULES"
    )


@pytest.mark.parametrize(
    ("expr", "unmet"),
    [
        ("A && B", ["B"]),
        ("A || B", []),
        ("!A", ["!A"]),
        ("!B && (A || B)", []),
        ("M", []),  # m is not n
        ("M = y", ["M = y"]),
        ("NR = 8 && NR >= 0x4 && NR < 16", []),
        ('S = "abc"', []),
        ("$(cc-option,-mfoo)", []),  # macros are not evaluated: no claim
        ("A &&", []),  # nor is anything unparsable
    ],
)
def test_unmet_evaluates_dependency_expressions(expr: str, unmet: list[str]) -> None:
    final = {"CONFIG_A": "y", "CONFIG_M": "m", "CONFIG_NR": "8", "CONFIG_S": '"abc"'}
    assert kconfig_deps.unmet([expr], final) == unmet


# --- real processes -------------------------------------------------------------


@pytest.mark.integration
def test_reason_uses_git_grep_in_a_work_tree(tree: Path) -> None:
    git(tree, "init", "-q")
    git(tree, "add", "-A")
    # git grep only sees tracked files: the untracked copy proves which path ran.
    write(tree, {"net/Kconfig": "config FOO\n\tbool\n"})
    assert kconfig_deps.dependency_reason(tree, "FOO") == (
        "defined in init/Kconfig:4; depends on BAR && BAZ"
    )


FAKE_MAKEFILE = """\
# A stand-in for the kernel's kconfig targets; make runs it with -C and O=.
tinyconfig:
\tprintf '%s\\n' '#' '# Automatically generated file; DO NOT EDIT.' \\
\t\t'CONFIG_BASE=y' '# CONFIG_DEP is not set' '# CONFIG_NEEDS_DEP is not set' \\
\t\t'CONFIG_ARCH_NAME="$(ARCH)"' 'CONFIG_CC_NAME="$(CC)"' > $(O)/.config

# Like the real one, drops what lacks its dependency.
olddefconfig:
\tif grep -q '^CONFIG_DEP=y' $(O)/.config; then cp $(O)/.config $(O)/.new; \\
\telse grep -v '^CONFIG_NEEDS_DEP=' $(O)/.config > $(O)/.new; fi
\t(echo '# regenerated'; cat $(O)/.new) > $(O)/.config
"""

FAKE_KCONFIG = """\
config DEP
\tbool "dep"

config NEEDS_DEP
\tbool "needs dep"
\tdepends on DEP
"""


@pytest.fixture
def srctree(tmp_path: Path) -> Path:
    return write(tmp_path / "src", {"Makefile": FAKE_MAKEFILE, "Kconfig": FAKE_KCONFIG})


def run_configure(
    srctree: Path, tmp_path: Path, fragments: Mapping[str, str], base: str = "tinyconfig"
) -> kconfig.Configured:
    paths = [write(tmp_path, {name: text}) / name for name, text in fragments.items()]
    return kconfig.configure(
        srctree,
        tmp_path / "build",
        arch="x86_64",
        sandbox=PLAIN,
        base=base,
        fragments=paths,
        make_args=["CC=fakecc"],
        log=tmp_path / "logs" / "kconfig.log",
        timeout=60,
    )


@pytest.mark.integration
def test_configure_reports_a_dropped_symbol(srctree: Path, tmp_path: Path) -> None:
    result = run_configure(srctree, tmp_path, {"needs.config": "CONFIG_NEEDS_DEP=y\n"})
    assert not result.ok and result.error is None
    assert result.mismatches == (
        KconfigMismatch(
            symbol="CONFIG_NEEDS_DEP",
            wanted="y",
            got="n",
            fragment=str(tmp_path / "needs.config"),
            reason="defined in Kconfig:4; depends on DEP; not met: DEP",
        ),
    )
    # make got ARCH and the make_args; the text is the final .config.
    assert 'CONFIG_ARCH_NAME="x86_64"' in result.config_text
    assert 'CONFIG_CC_NAME="fakecc"' in result.config_text
    assert result.config_text.startswith("# regenerated\n")
    assert result.sha256 == kconfig.config_hash(result.config_text)
    log = result.log.read_text()
    assert "$ make -C" in log and "tinyconfig" in log and "olddefconfig" in log


@pytest.mark.integration
def test_configure_with_the_dependency_sticks(srctree: Path, tmp_path: Path) -> None:
    fragments = {
        "needs.config": "CONFIG_NEEDS_DEP=y\n# CONFIG_DEP is not set\n",
        "dep.config": "CONFIG_DEP=y\n",
    }
    result = run_configure(srctree, tmp_path, fragments)
    assert result.ok, result.mismatches
    assert result.notes == (
        f"{tmp_path / 'dep.config'} overrides CONFIG_DEP=n from {tmp_path / 'needs.config'} with y",
    )
    final = kconfig.parse(result.config_text)
    assert final["CONFIG_NEEDS_DEP"] == final["CONFIG_DEP"] == "y"


@pytest.mark.integration
def test_a_failing_make_is_a_verdict(srctree: Path, tmp_path: Path) -> None:
    result = run_configure(srctree, tmp_path, {}, base="nosuchconfig")
    assert not result.ok
    assert result.error is not None
    assert "nosuchconfig: exit 2" in result.error
    assert "No rule to make target" in result.error
    assert result.config_text == result.sha256 == ""


@pytest.mark.integration
def test_a_missing_fragment_is_a_user_error(srctree: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read kconfig fragment"):
        kconfig.configure(
            srctree,
            tmp_path / "build",
            arch="x86_64",
            sandbox=PLAIN,
            base="tinyconfig",
            fragments=[tmp_path / "missing.config"],
            make_args=[],
            log=tmp_path / "kconfig.log",
            timeout=60,
        )
    assert not (tmp_path / "kconfig.log").exists()  # nothing was started


# --- the shipped fragments against the real 6.1 kconfig -------------------------

TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")


@pytest.mark.e2e
@pytest.mark.skipif(not TARBALL.exists(), reason=f"needs {TARBALL}")
def test_shipped_fragments_stick_on_linux_6_1(tmp_path: Path) -> None:
    # kconfig needs only the Kconfig files, scripts/ and the Makefiles.
    members = [
        "*Kconfig*",
        "Makefile",
        "scripts/*",
        "arch/x86/Makefile*",
        "arch/x86/configs/*",
        "kernel/configs/*",
    ]
    proc.run(
        ["tar", "-xJf", str(TARBALL), "-C", str(tmp_path), "--wildcards"]
        + [f"linux-source-6.1/{m}" for m in members],
        timeout=600,
    ).check()
    result = kconfig.configure(
        tmp_path / "linux-source-6.1",
        tmp_path / "build",
        arch="x86_64",
        sandbox=PLAIN,
        base="tinyconfig",
        fragments=[REPO / "kconfigs/base.config", REPO / "kconfigs/bpf.config"],
        make_args=[],
        log=tmp_path / "kconfig.log",
        timeout=600,
    )
    assert result.error is None
    assert result.mismatches == ()
