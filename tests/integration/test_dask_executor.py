"""The Dask executor against a real `dask scheduler` and two `dask worker`s on 127.0.0.1.

The matrix is the runner's fake tree (real git and make, tests/fakelinux);
the workers preload tests/dask_fake_boots.py, so a boot starts no QEMU (the
real guest on a Dask worker is tests/e2e/test_dask.py).  Every process a test
starts is killed in its teardown, and the teardown checks none is left.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from orchestrator import cli, config, dask_executor, journal, perf, results, units
from orchestrator.cache import Cache
from orchestrator.dask_executor import CACHE_ENV, SHARED_ENV
from orchestrator.results import RunResult, Status
from orchestrator.runner import collect_series
from orchestrator.vm import guest
from tests import dask_fake_boots
from tests.dask_cluster import Cluster, free_port
from tests.faults.harness import MARKER, Launch, processes_of
from tests.integration.test_runner import _whole_matrix, project  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
DASK = Path(sys.executable).with_name("dask")


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path / "cluster", preload="tests.dask_fake_boots")
    try:
        yield running
    finally:
        running.stop()


def _run(matrix: Path, tmp: Path, name: str, *extra: str) -> tuple[int, RunResult]:
    out = tmp / f"run-{name}"
    code = cli.main(
        ["run", str(matrix), "--cache-dir", str(tmp / f"cache-{name}"), "--out", str(out), *extra]
    )
    return code, results.read(out / "results.json")


def verdicts(run: RunResult) -> list[tuple[str, list[tuple[str, str]], list[tuple[str, str]]]]:
    """Each variant's stages and tests as verdicts, the A/A control's after them."""
    shown = [*run.variants, *([run.control] if run.control else [])]
    return [
        (
            v.name,
            [(s.stage.value, s.status.value) for s in v.stages],
            [(t.label, t.verdict.value) for t in v.tests],
        )
        for v in shown
    ]


@pytest.fixture()
def serial(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunResult:  # noqa: F811
    monkeypatch.setattr(guest, "boot", dask_fake_boots.boot)
    code, run = _run(_whole_matrix(project), tmp_path, "serial")
    assert code == 1  # conflict, broken and kconfig-miss fail
    return run


def test_two_workers_give_the_serial_verdicts_and_say_where_units_ran(
    project: Path,  # noqa: F811
    tmp_path: Path,
    serial: RunResult,
    cluster: Cluster,
) -> None:
    # Two caches: a kernel booted on the worker that did not build it is fetched there.
    cluster.start({
        "w1": {"ORCHESTRATE_CACHE_DIR": str(tmp_path / "cache-w1"),
               "ORCHESTRATE_TEST_BOOT_SECONDS": "1"},
        "w2": {"ORCHESTRATE_CACHE_DIR": str(tmp_path / "cache-w2"),
               "ORCHESTRATE_TEST_BOOT_SECONDS": "1"},
    })  # fmt: skip
    code, run = _run(_whole_matrix(project), tmp_path, "dask", "--executor", cluster.address)
    assert code == 1
    assert verdicts(run) == verdicts(serial)
    assert run.incomplete == ""
    # Every unit that ran says where; the worker's identity is this machine's.
    ran = [u for u in run.workers]
    assert {p.unit for p in ran} >= {"prepare", "build:base", "functional:tweak", "perf-round:1:3"}
    assert all(p.host == os.uname().nodename and p.kernel == os.uname().release for p in ran)
    assert all(p.cpu and p.qemu for p in ran)
    assert len({p.worker for p in ran}) == 2
    # The perf rounds ran as blocks, side by side on both workers (a wave of two).
    assert run.perf_plan is not None and run.perf_plan.blocks == 2
    assert set(perf.places_of(run, 1).values()) == {p.worker for p in ran}
    build = next(p for p in ran if p.unit == "build:base")
    assert build.artifacts.startswith("vmlinux sha256 ")
    fetched = [p for p in ran if p.artifacts.startswith("fetched ")]
    assert fetched, [p.artifacts for p in ran]
    # The fetched copy is in the other worker's cache, byte for byte.
    assert list((tmp_path / "cache-w1" / "artifacts").glob("*/vmlinux")) and list(
        (tmp_path / "cache-w2" / "artifacts").glob("*/vmlinux")
    )
    # The results file with placements is one `orchestrate report` reads.
    assert cli.main(["report", str(tmp_path / "run-dask" / "results.json")]) in (0, 1)


def test_a_worker_killed_mid_unit_loses_no_verdict(
    project: Path,  # noqa: F811
    tmp_path: Path,
    serial: RunResult,
    cluster: Cluster,
) -> None:
    # A cache each, and a shared artifacts directory: a kernel outlives its builder.
    shared = {"ORCHESTRATE_TEST_BOOT_SECONDS": "3", SHARED_ENV: str(tmp_path / "shared")}
    cluster.start({
        name: {**shared, CACHE_ENV: str(tmp_path / f"cache-{name}")} for name in ("w1", "w2")
    })  # fmt: skip
    killed: list[str] = []

    def kill_the_first_boot() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for mark in cluster.marks.iterdir():
                pid, variant = mark.name.split("-", 1)
                os.kill(int(pid), signal.SIGKILL)
                killed.append(variant)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_first_boot)
    killer.start()
    try:
        code, run = _run(_whole_matrix(project), tmp_path, "dask", "--executor", cluster.address)
    finally:
        killer.join()
    assert killed, "no boot started"
    assert code == 1
    assert verdicts(run) == verdicts(serial)
    assert len({p.worker for p in run.workers if p.unit.startswith(("functional", "perf"))}) == 1
    # Every kernel that booted was published for the others.
    built = {
        Path(v.build.artifact_dir).name for v in run.variants if v.build and not v.build.first_error
    }
    assert built <= {p.name for p in (tmp_path / "shared").iterdir()}


def test_a_unit_that_kills_two_workers_is_an_infrastructure_fault(
    project: Path,  # noqa: F811
    tmp_path: Path,
    cluster: Cluster,
    capsys: pytest.CaptureFixture[str],
) -> None:
    killer = {"ORCHESTRATE_TEST_KILLER": "base"}
    cluster.start({"w1": killer, "w2": killer})
    matrix = _whole_matrix(project)
    out = tmp_path / "run-dask"
    argv = ["run", str(matrix), "--only", "base", "--executor", cluster.address]
    code = cli.main([*argv, "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 3
    assert "functional:base: 2 Dask workers died while running it" in err
    assert "Traceback" not in err
    run = results.read(out / "results.json")
    assert "functional:base" in run.incomplete
    assert [s.status.value for s in run.variants[0].stages[:3]] == ["pass"] * 3


def test_a_bad_address_is_exit_2_and_no_scheduler_exit_3(
    project: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    matrix = str(project / "matrix.yaml")
    cache = ["--cache-dir", str(tmp_path / "cache"), "--until", "build"]
    assert cli.main(["run", matrix, *cache, "--executor", "dask://nowhere"]) == 2
    err = capsys.readouterr().err
    assert "expected dask://HOST:PORT" in err and "Traceback" not in err
    port = free_port()
    assert cli.main(["run", matrix, *cache, "--executor", f"dask://127.0.0.1:{port}"]) == 3
    err = capsys.readouterr().err
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "cache").exists()


def test_a_tree_unit_on_a_worker_without_the_tree_prepares_and_applies_it_first(
    project: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a worker with a cache of its own does when the tree's worker is lost."""
    code, first = _run(project / "matrix.yaml", tmp_path, "a", "--until", "build")
    assert code == 1
    done = {r.unit: r.output for r in journal.read(tmp_path / "run-a").done}
    prepared, applied = done["prepare"], done["apply:tweak"]
    assert isinstance(prepared, units.Prepared) and isinstance(applied, units.Applied)
    matrix = config.load(project / "matrix.yaml")
    patches = collect_series(matrix, ())
    ctx = units.Context(matrix, Cache(tmp_path / "cache-a"), tmp_path / "run-b", patches)
    monkeypatch.setenv(dask_executor.CACHE_ENV, str(tmp_path / "cache-b"))
    shutil.rmtree(tmp_path / "cache-a")  # the tree's worker is gone

    work = functools.partial(units.configure, ctx, "tweak", prepared, applied)
    here, fetched, _notes = dask_executor._localized(work, (), "tcp://b:1")
    assert fetched == []
    configured = here()
    assert isinstance(configured, units.Configured)
    assert configured.stage.status is Status.PASS
    tweak = next(v for v in first.variants if v.name == "tweak")
    assert tweak.build is not None and configured.tree == tweak.build.tree
    assert (tmp_path / "cache-b" / "trees").is_dir()


def test_ctrl_c_stops_the_units_running_on_workers(
    project: Path,  # noqa: F811
    tmp_path: Path,
    cluster: Cluster,
) -> None:
    """Dask does not interrupt a running task: the executor asks each worker to
    stop the run's units (stop_units), and the CLI exits once their children
    (here a `sleep 300` standing for a QEMU) are gone."""
    marker = f"dask-ctrl-c-{os.getpid()}"
    hang = {MARKER: marker, "ORCHESTRATE_TEST_HANG": "base"}
    cluster.start({"w1": hang, "w2": hang})
    out = tmp_path / "out"
    argv: list[str | Path] = ["run", _whole_matrix(project), "--out", out]
    argv += ["--cache-dir", tmp_path / "cache", "--executor", cluster.address]

    def sleeping() -> list[psutil.Process]:
        return [p for p in processes_of(marker) if p.info["name"] == "sleep"]  # named when found

    run = Launch(argv, tmp_path / "cli.log", f"{marker}-cli")
    try:
        run.wait_for(lambda: bool(sleeping()), 120, "the hanging boot")
        run.signal(signal.SIGINT)
        code = run.wait(120)
    finally:
        run.bg.stop()
    said = run.output()
    assert code == 130, said[-3000:]
    assert "Traceback" not in said
    assert sleeping() == []  # stopped on its worker, not left to run out its 300 s
    assert results.read(out / "results.json").incomplete.startswith("interrupted (Ctrl-C)")
    # The workers lived through it: a stopped unit is a task that ended.
    assert all(w.poll() is None for w in cluster.workers.values())
