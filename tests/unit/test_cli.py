"""The command line's own rules: exit codes for faults it did not expect, closed pipes."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator import cli, config, proc
from orchestrator.commands import common
from orchestrator.commands import run as run_command
from orchestrator.vm import cpusets


def test_an_unexpected_fault_is_one_line_and_exit_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(ns: argparse.Namespace) -> int:
        raise OSError(28, "No space left on device", "/cache/work/build")

    monkeypatch.setattr(cli, "_command", broken)
    assert cli.main(["history", "--db", "x.sqlite"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "OSError (/cache/work/build): [Errno 28] No space left on device" in err
    with pytest.raises(OSError):
        cli.main(["history", "--db", "x.sqlite", "--debug"])


def test_a_closed_pipe_is_a_quiet_exit(tmp_path: Path) -> None:
    proc.run(["git", "init", "-q", tmp_path], timeout=30).check()
    matrix = tmp_path / "m.yaml"
    lines = "".join(f"  - name: v{i}\n" for i in range(3000))  # beyond a pipe buffer
    matrix.write_text(f"tree: {{path: {tmp_path}}}\nvariants:\n{lines}")
    reader = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "plan", str(matrix),
         "--cache-dir", str(tmp_path / "cache")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.readline()
    reader.stdout.close()  # as `| head -1` does
    err = reader.stderr.read().decode()
    assert reader.wait(60) == 141, err
    assert err == ""


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path: Path) -> None:
    started = datetime(2026, 12, 6, 21, 0, 0, 5000, tzinfo=UTC)
    first = common.new_run_dir(tmp_path / "m", started)
    second = common.new_run_dir(tmp_path / "m", started)
    assert (first.name, second.name) == ("20261206-210000", "20261206-210000-2")
    assert first.is_dir() and second.is_dir()


def test_a_misspelt_command_gets_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["histroy"]) == 2
    assert "did you mean 'history'?" in capsys.readouterr().err
    assert cli.main(["nonsense"]) == 2
    assert "neither a command" in capsys.readouterr().err


def test_an_unknown_only_lists_the_variants(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".git").mkdir()  # config checks only that the tree is a checkout
    matrix = tmp_path / "m.yaml"
    matrix.write_text(
        f"name: m\ntree: {{path: {tmp_path}}}\nvariants:\n  - name: base\n  - name: tweak\n"
    )
    assert cli.main(["plan", str(matrix), "--only", "twaek"]) == 2
    assert "no such variant: twaek (the matrix has: base, tweak)" in capsys.readouterr().err


@pytest.mark.parametrize("command", cli.COMMANDS)
def test_every_command_has_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    assert "example" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "two", ""])
def test_vms_must_be_a_whole_number_of_guests(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = cli.main(["run", str(tmp_path / "m.yaml"), "--vms", value])
    except SystemExit as exc:
        code = exc.code  # type: ignore[assignment]
    assert code == 2
    assert "--vms" in capsys.readouterr().err


def test_plan_shows_the_guests_that_run_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".git").mkdir()
    matrix = tmp_path / "m.yaml"
    matrix.write_text(
        f"name: m\ntree: {{path: {tmp_path}}}\nguest: {{cpus: 1, memory: 256}}\n"
        "tests: [{name: p, kind: map_perf, command: /p, repeats: 5}]\n"
        "variants:\n  - name: base\n"
    )
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert cli.main(["plan", str(matrix), *cache, "--vms", "2"]) == 0
    out = capsys.readouterr().out
    assert "guests at once: 2 (--vms); CPU sets: " in out
    if cpusets.disjoint(run_command.placement(config.load(matrix), 2).sets):  # 2+ CPUs
        assert "perf rounds: 2 side by side, each whole on one CPU set" in out
    else:
        assert "perf rounds: one at a time, on the whole machine" in out
    assert cli.main(["plan", str(matrix), *cache]) == 0
    assert "guests at once: " in capsys.readouterr().out
    # More guests than CPUs: their sets overlap, said on stderr, and perf rounds get the machine.
    beyond = str(len(os.sched_getaffinity(0)) + 1)
    assert cli.main(["plan", str(matrix), *cache, "--vms", beyond]) == 0
    said = capsys.readouterr()
    assert f"orchestrate: warning: --vms {beyond}: " in said.err and "overlap" in said.err
    assert "perf rounds: one at a time, on the whole machine (the CPU sets overlap)" in said.out
    # Far more than any machine's memory: refused before anything starts.
    assert cli.main(["plan", str(matrix), *cache, "--vms", "100000"]) == 2
    assert "--vms 100000: 100000 guests need" in capsys.readouterr().err
