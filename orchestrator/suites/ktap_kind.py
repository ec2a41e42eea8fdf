"""`kind: ktap`: a guest program that prints KTAP, the generic kind.

The test's `command:` (required) runs with its `args:` as ``--key=value``
options, each quoted for the guest's shell; its output is parsed by
suites/ktap.py.  The program is usually one of the project's guest programs
(`guest.selftests`), so the test is ERROR when those did not build.
"""

from __future__ import annotations

from orchestrator.suites.registry import Need, Rule, Suite


class KtapSuite(Suite):
    kind = "ktap"
    command_rule = Rule(Need.REQUIRED)
    uses_guest_programs = True
