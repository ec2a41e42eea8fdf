"""Text as people read it: hostile characters are shown, never acted on."""

from __future__ import annotations

import pytest

from orchestrator.textfmt import clip, for_terminal, printable, quote

# An RFC 2047 subject "=?utf-8?q?=1B]0;owned=07?=" decodes to an OSC that
# retitles the terminal; U+202E turns "exe.gnp" round.
OSC = "\x1b]0;owned\x07"
CSI = "\x1b[2J\x9b31m"


def test_controls_are_shown_as_escapes() -> None:
    assert printable(f"a{OSC}b") == "a\\x1b]0;owned\\x07b"
    assert printable(CSI) == "\\x1b[2J\\x9b31m"
    assert printable("\x00\x7f") == "\\x00\\x7f"
    assert printable("tab\tand\nnewline stay") == "tab\tand\nnewline stay"


@pytest.mark.parametrize(
    "char", ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068",
             "\u2069", "\u200e", "\u200f", "\u061c"],
)  # fmt: skip
def test_bidi_controls_are_shown_as_code_points(char: str) -> None:
    assert printable(f"x{char}y") == f"x<U+{ord(char):04X}>y"
    assert for_terminal(f"x{char}y") == f"x<U+{ord(char):04X}>y"


def test_lone_surrogates_are_shown() -> None:
    assert printable("a\ud800b") == "a\\ud800b"
    for_terminal("a\udfffb").encode()  # the terminal can be written to


def test_plain_text_and_other_scripts_are_left_alone() -> None:
    text = "bpf: Handle reuse — Ünïcode, 日本語, עברית, العربية"
    assert printable(text) == text == for_terminal(text, one_line=True)


def test_for_terminal_also_shows_carriage_returns_and_one_line_shows_newlines() -> None:
    # A carriage return would let "FAIL" be overwritten with "PASS".
    assert for_terminal("FAIL\rPASS") == "FAIL\\x0dPASS"
    assert for_terminal("a\nb") == "a\nb"
    assert for_terminal("a\nb", one_line=True) == "a\\x0ab"
    assert "\x1b" not in for_terminal(OSC + CSI, one_line=True)


def test_clip_and_quote_bound_what_is_shown() -> None:
    assert clip("abc", 5) == "abc"
    assert clip("a" * 300, 200) == "a" * 200 + "… (300 characters)"
    assert quote("ab") == "'ab'"
    assert quote("a" * 5000) == "'" + "a" * 200 + "…' (5000 characters)"
    assert quote("it's" * 100, 10) == "\"it'sit'sit…\" (400 characters)"
    assert len(for_terminal("x" * 10**6, limit=500)) < 600
