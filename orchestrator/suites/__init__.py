"""Test suites: one module per kind of test, and the registry that dispatches on `kind:`.

The kinds' parsers (ktap, test_progs) are modules of their own; the kinds
(ktap_kind, map_perf, kselftest) say how a test of theirs is checked, run
and read (see registry.Suite).  A new kind is one module plus one line here:
the order of registration is the order the matrix's error messages list them.
"""

from orchestrator.suites import kselftest, ktap_kind, map_perf
from orchestrator.suites.registry import (
    Arg,
    Installed,
    Installer,
    Kernel,
    Need,
    Rule,
    Suite,
    get,
    installers,
    kinds,
    not_installed,
    register,
    suite_for,
    unregister,
)

register(ktap_kind.KtapSuite())
register(map_perf.MapPerfSuite())
register(kselftest.KselftestSuite())

__all__ = [
    "Arg",
    "Installed",
    "Installer",
    "Kernel",
    "Need",
    "Rule",
    "Suite",
    "get",
    "installers",
    "kinds",
    "not_installed",
    "register",
    "suite_for",
    "unregister",
]
