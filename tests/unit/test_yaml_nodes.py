"""The YAML readers: a matrix from elsewhere is read with bounds.

Its size, its nesting and how much of a value an error quotes are bounded,
so a hostile or broken file is one clear line and exit 2, never a
RecursionError or megabytes echoed to the terminal.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import cli, config, yaml_nodes
from orchestrator.errors import MatrixError
from orchestrator.yaml_nodes import MAX_DEPTH, Node, bounded, choice, document, entries, string


def _error(path: Path) -> MatrixError:
    with pytest.raises(MatrixError) as info:
        config.load(path)
    return info.value


def test_deep_nesting_is_an_error_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("variants:\n  - name: x\n    series:\n" + "      - " + "[" * 2000 + "]" * 2000)
    error = _error(path)
    assert error.message == f"nested too deeply (limit {MAX_DEPTH})"
    assert error.line == 4
    assert error.key.startswith("variants[0].series[0][0][0]") and len(error.key) <= 200


def test_deep_block_mappings_name_their_keys(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("".join(f"{'  ' * i}k{i}:\n" for i in range(150)) + "  " * 150 + "x\n")
    error = _error(path)
    assert error.line == MAX_DEPTH + 1  # the mapping one too deep: k100's, under k99
    assert error.key.startswith("k0.k1.k2.") and error.key.endswith(f"k{MAX_DEPTH - 1}")


def test_nesting_up_to_the_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    assert len(document(path).node.value) == 1


def test_cli_says_so_in_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("variants: " + "[" * 2000 + "]" * 2000 + "\n")
    assert cli.main(["plan", str(path), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"orchestrate: error: {path}:1: variants[0][0][0]")
    assert err.endswith(f"[0][0]: nested too deeply (limit {MAX_DEPTH})\n")
    assert err.count("\n") == 1 and len(err) < 400  # the key path is cut in the middle


def test_a_huge_value_is_quoted_briefly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # config's own message ("'...' is not a safe name") is bounded by Node.error.
    path = tmp_path / "m.yaml"
    path.write_text("variants:\n  - name: " + "a" * 1_000_000 + "\n")
    assert cli.main(["plan", str(path), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"orchestrate: error: {path}:2: variants[0].name: 'aaaa")
    assert "… (1000002 characters) is not a safe name: it is longer than 64" in err
    assert len(err) < 1000


def test_the_readers_quote_at_most_200_characters(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    long = "b" * 5000
    path.write_text(f"? {long}\n: 1\nwhat: {long}\nnumber: {'9' * 4000}\nhuge: {'9' * 5000}\n")
    root = document(path)
    fields = dict(entries(root))
    with pytest.raises(MatrixError) as info:
        choice(fields["what"], ("x", "y"))
    assert info.value.message == f"must be one of x, y; got '{'b' * 200}…' (5000 characters)"
    with pytest.raises(MatrixError) as info:
        string(fields["number"])
    assert info.value.message.startswith(f"expected a string, got an integer {'9' * 200}… (4000 ")
    assert len(info.value.message) < 600
    with pytest.raises(MatrixError) as info:  # more digits than Python reads: no ValueError
        string(fields["huge"])
    assert info.value.message == "expected a string, got a number of 5000 characters"
    with pytest.raises(MatrixError) as info:
        yaml_nodes.mapping(root, ("what", "number", "huge"))
    assert len(str(info.value)) < 600
    assert fields[long].key_path == "b" * 200 + "… (5000 characters)"


def test_bounded_keeps_short_messages_and_the_end_of_long_ones() -> None:
    assert bounded("expected a string, got a list") == "expected a string, got a list"
    spaced = bounded("x " * 100_000 + "is the rule")
    assert len(spaced) < 2100 and spaced.endswith("is the rule")
    assert "characters)" in spaced


def test_the_file_is_read_up_to_a_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yaml_nodes, "MAX_BYTES", 100)
    path = tmp_path / "m.yaml"
    path.write_text("variants:\n  - name: " + "a" * 200 + "\n")
    error = _error(path)
    assert (error.line, error.key, error.message) == (
        0,
        "<file>",
        "larger than 0 MiB: not a matrix file",
    )


def test_a_10_mib_file_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    with path.open("w") as f:
        f.write("variants:\n  - name: ")
        f.write("a" * (10 * 1024 * 1024))
    error = _error(path)
    assert error.message == "larger than 10 MiB: not a matrix file"


def test_a_node_error_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("a: 1\n")
    node = Node(document(path).node, "a", 1, path, tmp_path)
    assert len(node.error("z" * 10**6).message) < 300
