"""Real guests on a Dask cluster: a `dask scheduler` and two `dask worker`s on
127.0.0.1, each allowed one guest, boot the e2e tests' upstream kernel.

Guests get one vCPU and 512 MiB, so two fit on a 2-core machine; the only
test is the smoke test, whose verdict holds at that size.  The two variants
share one kernel (same tree: built once), so their boots can run at once,
one per worker; the merged results must give the serial run's verdicts.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import cli, results
from orchestrator.results import RunResult, Status
from tests.conftest import REPO
from tests.dask_cluster import Cluster

pytestmark = pytest.mark.e2e
FRAGMENTS = ", ".join(
    str(REPO / "kconfigs" / f) for f in ("base.config", "vm.config", "bpf.config", "debug.config")
)


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path / "cluster")
    try:
        yield running
    finally:
        running.stop()


def _matrix(directory: Path) -> Path:
    matrix = directory / "matrix.yaml"
    matrix.write_text(
        textwrap.dedent(f"""\
        name: dask
        kconfig: {{fragments: [{FRAGMENTS}]}}
        guest: {{cpus: 1, memory: 512, boot_timeout: 120, selftests: {REPO / "selftests"}}}
        report: {{dir: {directory / "reports"}}}
        tests:
          - {{name: smoke, kind: ktap, command: /opt/selftests/smoke.sh, timeout: 120}}
        variants:
          - name: upstream
          - name: upstream-again
        """)
    )
    return matrix


def _verdicts(run: RunResult) -> list[tuple[str, list[Status], list[str]]]:
    return [
        (v.name, [s.status for s in v.stages], [f"{t.name}:{t.verdict.value}" for t in v.tests])
        for v in run.variants
    ]


def test_real_guests_on_two_workers_give_the_serial_verdicts(
    kernel: Path, e2e_cache: Path, tmp_path: Path, cluster: Cluster
) -> None:
    matrix = _matrix(tmp_path)
    cache = ["--cache-dir", str(e2e_cache)]
    assert cli.main(["run", str(matrix), *cache, "--out", str(tmp_path / "serial")]) == 0
    serial = results.read(tmp_path / "serial" / "results.json")
    assert all(v.build is not None and v.build.cached for v in serial.variants)

    cluster.start({"w1": {}, "w2": {}})
    out = tmp_path / "dask"
    argv = ["run", str(matrix), *cache, "--out", str(out), "--executor", cluster.address]
    assert cli.main(argv) == 0
    run = results.read(out / "results.json")
    assert _verdicts(run) == _verdicts(serial)
    assert [t.verdict.value for v in run.variants for t in v.tests] == ["pass", "pass"]
    boots = {p.unit: p for p in run.workers if p.unit.startswith("functional:")}
    assert set(boots) == {"functional:upstream", "functional:upstream-again"}
    assert len({p.worker for p in boots.values()}) == 2  # one guest on each worker
    assert all(p.qemu.startswith("QEMU emulator version") for p in boots.values())
