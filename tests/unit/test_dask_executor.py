"""The Dask executor's pure parts: addresses, resources, where a unit should go,
artifact manifests, and what is shipped to a worker (the cluster itself is
tests/integration/test_dask_executor.py)."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, cast

import cloudpickle  # type: ignore[import-untyped]
import distributed
import pytest

from orchestrator import config, dask_executor, results, units
from orchestrator.cache import Cache
from orchestrator.dask_executor import Artifacts, Copy, preferred
from orchestrator.errors import InfraError, UserError
from orchestrator.executor import SerialExecutor, for_spec, placement_of
from orchestrator.plan import Unit, UnitKind
from orchestrator.results import BuildInfo, Placement, RunResult, Stage, StageResult, Status
from orchestrator.units import Built, Context, GuestState

REPO = Path(__file__).resolve().parents[2]
NONE = cast(Any, None)  # an input these tests do not look at
A, B, C = "tcp://a:1", "tcp://b:1", "tcp://c:1"


@pytest.mark.parametrize(
    ("spec", "address"),
    [
        ("dask://127.0.0.1:8786", "tcp://127.0.0.1:8786"),
        ("dask://build-box.lan:9000", "tcp://build-box.lan:9000"),
        ("dask://[::1]:8786", "tcp://[::1]:8786"),
    ],
)
def test_a_dask_url_is_the_schedulers_tcp_address(spec: str, address: str) -> None:
    assert dask_executor.scheduler_address(spec) == address


@pytest.mark.parametrize(
    "spec",
    ["dask://", "dask://host", "dask://host:port", "dask://host:99999", "dask://h:1/x",
     "dask://h:1?a=b", "dask://u@h:1", "tcp://h:1"],
)  # fmt: skip
def test_a_bad_address_is_a_user_error(spec: str) -> None:
    with pytest.raises(UserError, match="expected dask://HOST:PORT"):
        dask_executor.scheduler_address(spec)


def test_the_executor_option() -> None:
    assert isinstance(for_spec("serial"), SerialExecutor)
    with pytest.raises(UserError, match="expected serial or dask://HOST:PORT"):
        for_spec("threads")
    # The serial executor runs here: no placement to record.
    assert placement_of(SerialExecutor(), Unit("prepare", UnitKind.PREPARE)) is None


def test_guests_hold_a_vm_slot_and_the_rest_the_build_box() -> None:
    assert dask_executor.resources_for(UnitKind.FUNCTIONAL) == {"vm": 1}
    assert dask_executor.resources_for(UnitKind.PERF_ROUND) == {"vm": 1}
    for kind in (UnitKind.PREPARE, UnitKind.APPLY, UnitKind.BUILD, UnitKind.GUEST):
        assert dask_executor.resources_for(kind) == {"build": 1}


# --- manifests ---------------------------------------------------------------------------------


def test_a_manifest_checks_every_file(tmp_path: Path) -> None:
    (tmp_path / "vmlinux").write_bytes(b"kernel")
    (tmp_path / "build.log").write_text("ok\n")
    manifest = dask_executor.manifest_of(tmp_path)
    assert manifest == (
        ("build.log", hashlib.sha256(b"ok\n").hexdigest()),
        ("vmlinux", hashlib.sha256(b"kernel").hexdigest()),
    )
    files = dask_executor.read_artifacts(str(tmp_path))
    assert dask_executor.mismatch(files, manifest) is None
    wrong = dask_executor.mismatch({**files, "vmlinux": b"kernel!"}, manifest)
    assert wrong is not None and wrong.startswith("vmlinux has sha256 ")
    assert dask_executor.mismatch({"vmlinux": b"kernel"}, manifest) == "build.log is missing"
    assert Artifacts("a", manifest).vmlinux == hashlib.sha256(b"kernel").hexdigest()


def test_a_fetched_copy_replaces_nothing_already_there(tmp_path: Path) -> None:
    dest = tmp_path / "artifacts" / "k"
    dask_executor._install({"vmlinux": b"one"}, dest)
    dask_executor._install({"vmlinux": b"two"}, dest)  # a second fetch lost the race
    assert (dest / "vmlinux").read_bytes() == b"one"
    assert [p.name for p in dest.parent.iterdir()] == ["k"]  # no staging left behind


class _Task:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def result(self, timeout: float) -> dict[str, bytes]:
        return self.files

    def cancel(self) -> None:
        pass


class _Client:
    """What a fetch asks of distributed: the live workers, and a task on one of them."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.asked: list[tuple[str, list[str]]] = []

    def sync(self, fn: Any, n_workers: int) -> dict[str, Any]:
        return {"workers": {A: {}, B: {}}}

    scheduler = type("rpc", (), {"identity": None})

    def submit(self, fn: Any, path: str, *, workers: list[str], **kw: Any) -> _Task:
        self.asked.append((path, workers))
        return _Task(self.files)


def test_a_fetched_kernel_is_checked_by_hash_on_arrival(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = {"vmlinux": b"kernel", "artifact.json": b"{}"}
    manifest = tuple(sorted((n, hashlib.sha256(d).hexdigest()) for n, d in good.items()))
    art = Artifacts("k", manifest, (Copy(A, "/a/artifacts/k"),))
    client = _Client({**good, "vmlinux": b"kernel, changed on the way"})
    monkeypatch.setattr(distributed, "get_client", lambda: client)
    monkeypatch.delenv(dask_executor.SHARED_ENV, raising=False)
    with pytest.raises(InfraError, match=r"artifacts k from tcp://a:1: vmlinux has sha256"):
        dask_executor._fetch(art, tmp_path / "k", B)
    assert not (tmp_path / "k").exists()
    client.files = good
    assert dask_executor._fetch(art, tmp_path / "k", B) == A
    assert client.asked[-1] == ("/a/artifacts/k", [A])
    assert (tmp_path / "k" / "vmlinux").read_bytes() == b"kernel"


def test_a_shared_directory_is_looked_at_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    (shared / "k").mkdir(parents=True)
    (shared / "k" / "vmlinux").write_bytes(b"kernel")
    art = Artifacts("k", (("vmlinux", hashlib.sha256(b"kernel").hexdigest()),), ())
    monkeypatch.setenv(dask_executor.SHARED_ENV, str(shared))
    assert dask_executor._fetch(art, tmp_path / "cache" / "k", B) == str(shared)
    # Corrupt there, and no worker holds it: an infrastructure fault that says so.
    (shared / "k" / "vmlinux").write_bytes(b"rotten")
    monkeypatch.setattr(distributed, "get_client", lambda: _Client({}))
    with pytest.raises(InfraError, match="none reachable"):
        dask_executor._fetch(art, tmp_path / "other" / "k", B)


# --- where a unit goes ---------------------------------------------------------------------

BOTH = {A: {"vm": 1.0, "build": 1.0}, B: {"vm": 1.0, "build": 1.0}}


def _functional(variant: str = "v") -> Unit:
    return Unit(f"functional:{variant}", UnitKind.FUNCTIONAL, variant)


def test_a_boot_prefers_the_worker_holding_its_kernel() -> None:
    art = Artifacts("k", (("vmlinux", "0" * 64),), (Copy(B, "/cache/artifacts/k"),))
    assert preferred(_functional(), [art], {}, {}, BOTH) == (B,)


def test_a_boot_goes_to_a_free_guest_slot_when_the_holder_is_busy() -> None:
    art = Artifacts("k", (), (Copy(B, "/b/k"),))
    assert preferred(_functional(), [art], {}, {B: 1}, BOTH) == (A,)
    # Every slot taken: wait for the holder rather than copy the kernel.
    assert preferred(_functional(), [art], {}, {A: 1, B: 1}, BOTH) == (B,)


def test_a_lost_holder_is_not_preferred() -> None:
    art = Artifacts("k", (), (Copy(C, "/c/k"),))
    assert preferred(_functional(), [art], {}, {A: 1}, BOTH) == (B,)


def test_tree_units_keep_to_the_worker_that_prepared_the_tree() -> None:
    for kind in (UnitKind.APPLY, UnitKind.CONFIGURE, UnitKind.BUILD, UnitKind.INSTALL):
        unit = Unit(f"{kind.value}:v", kind, "v")
        assert preferred(unit, [], {"prepare": B}, {}, BOTH) == (B,)
        assert preferred(unit, [], {"prepare": C}, {}, BOTH) == ()  # gone: anywhere
    assert preferred(Unit("prepare", UnitKind.PREPARE), [], {}, {}, BOTH) == ()


def test_perf_rounds_keep_to_one_worker() -> None:
    unit = Unit("perf-round:1:2", UnitKind.PERF_ROUND, after=("perf-round:1:1",), round=2)
    assert preferred(unit, [], {"perf-round:1:1": B}, {}, BOTH) == (B,)


def test_rounds_side_by_side_go_to_the_free_worker_first() -> None:
    # Two rounds planned after a wave that ran on both workers: the second
    # one submitted, with a guest of ours already on A, prefers B.
    before = ("perf-round:1:1", "perf-round:1:2")
    unit = Unit("perf-round:1:4", UnitKind.PERF_ROUND, after=before, round=4)
    ran_on = {"perf-round:1:1": A, "perf-round:1:2": B}
    assert preferred(unit, [], ran_on, {}, BOTH) == (A, B)
    assert preferred(unit, [], ran_on, {A: 1}, BOTH) == (B,)
    # The round before ran on A, which is busy: a free worker, not a queue behind A.
    after_a = Unit("perf-round:1:3", UnitKind.PERF_ROUND, after=("perf-round:1:1",), round=3)
    assert preferred(after_a, [], ran_on, {A: 1}, BOTH) == (B,)


def test_a_unit_is_submitted_to_its_best_worker_only() -> None:
    # Given both, the scheduler may queue the second round behind the first.
    before = ("perf-round:1:1", "perf-round:1:2")
    unit = Unit("perf-round:1:3", UnitKind.PERF_ROUND, after=before, round=3)
    ran_on = {"perf-round:1:1": A, "perf-round:1:2": B}
    assert dask_executor.request(unit, preferred(unit, [], ran_on, {}, BOTH)) == ([A], A)
    assert dask_executor.request(unit, preferred(unit, [], ran_on, {A: 1}, BOTH)) == ([B], B)
    build = Unit("build:v", UnitKind.BUILD, "v")
    assert dask_executor.request(build, preferred(build, [], {"prepare": B}, {}, BOTH)) == ([B], "")
    assert dask_executor.request(build, preferred(build, [], {}, {}, BOTH)) == ([], "")


# --- what goes to a worker -----------------------------------------------------------------


def _context(tmp_path: Path) -> Context:
    matrix = config.load(REPO / "matrix-quick.yaml")
    return Context(matrix, Cache(tmp_path / "cache"), tmp_path / "run", {}, progress=print)


def test_the_work_ships_without_the_progress_display(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    work = functools.partial(units.prepare, ctx)
    shipped = dask_executor._shippable(work)
    assert isinstance(shipped, functools.partial)
    (sent,) = shipped.args
    assert sent.progress is dask_executor._quiet and sent.matrix == ctx.matrix
    back = cloudpickle.loads(cloudpickle.dumps(shipped))
    assert back.func is units.prepare and back.args[0].matrix == ctx.matrix


def test_the_kernels_a_unit_boots_are_found_in_its_work(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    info = BuildInfo("t", "c", str(tmp_path / "artifacts" / "k1"), cached=False)
    built = Built(StageResult(Stage.BUILD, Status.PASS), info)
    functional = functools.partial(units.functional, ctx, "v", built, NONE, NONE, None)
    assert dask_executor.artifact_dirs(functional) == (tmp_path / "artifacts" / "k1",)
    guests = tuple(
        GuestState(n, n, tmp_path / "artifacts" / k / "vmlinux")
        for n, k in (("a", "k1"), ("b", "k2"), ("a~aa", "k1"))
    )
    rounds = functools.partial(units.perf_round, ctx, 1, 1, guests, NONE, None)
    assert dask_executor.artifact_dirs(rounds) == (
        tmp_path / "artifacts" / "k1",
        tmp_path / "artifacts" / "k2",
    )
    assert dask_executor.artifact_dirs(functools.partial(units.prepare, ctx)) == ()


def test_a_worker_with_its_own_cache_moves_the_kernel_paths(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    theirs = Path("/elsewhere/artifacts/k1")
    ours = tmp_path / "own" / "artifacts" / "k1"
    info = BuildInfo("t", "c", str(theirs), cached=False)
    built = Built(StageResult(Stage.BUILD, Status.PASS), info)
    moved = {theirs: ours}
    assert dask_executor._moved(built, ctx, moved).build.artifact_dir == str(ours)
    guests = (GuestState("a", "a", theirs / "vmlinux"), GuestState("b", "b", Path("/x/vmlinux")))
    assert [g.kernel for g in dask_executor._moved(guests, ctx, moved)] == [
        ours / "vmlinux",
        Path("/x/vmlinux"),
    ]


def test_placements_are_part_of_a_results_file_report_reads(tmp_path: Path) -> None:
    where = Placement("build:v", "tcp://a:1", "box", "AMD EPYC", "6.1.0", "QEMU 7.2", "vmlinux …")
    run = RunResult("m.yaml", "s", "f", (), workers=(where,))
    path = tmp_path / "results.json"
    results.write(run, path)
    assert json.loads(path.read_text())["workers"][0]["cpu"] == "AMD EPYC"
    assert results.read(path).workers == (where,)
    # A file written before the field existed reads as no placements.
    data = json.loads(path.read_text())
    del data["workers"]
    path.write_text(json.dumps(data))
    assert results.read(path).workers == ()
