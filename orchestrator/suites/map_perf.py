"""`kind: map_perf`: a guest program that measures, printing KTAP with metrics.

Run and parsed like `kind: ktap` (``command --key=value ...``; metrics are
``# metric: NAME VALUE`` diagnostics, see suites/ktap.py), but sampled once
per boot with the variants interleaved round by round: a perf kind (see
DESIGN.md, "Perf methodology").  Its program comes from the project's guest
programs (`guest.selftests`).
"""

from __future__ import annotations

from orchestrator.suites.registry import Suite


class MapPerfSuite(Suite):
    kind = "map_perf"
    perf = True
    uses_guest_programs = True
