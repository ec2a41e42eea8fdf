"""The HTML report: escaping, self-containment, content, size."""

from __future__ import annotations

import dataclasses
import os
import re
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import pytest
from markupsafe import escape

from orchestrator.perf import summarize
from orchestrator.report import charts, html
from orchestrator.report.common import LOG_BYTES, OUTSIDE, log_dirs
from orchestrator.results import BootInfo, RunResult, Status, TestResult, VariantResult, Verdict
from tests.unit.test_report_junit import (
    HOSTILE,
    INTERRUPTED,
    JINJA,
    SCRIPT,
    SECRET,
    _build,
    _stages,
    all_pass,
    partial_run,
    pointing_out,
    real_run,
    sample_run,
)

MB = 1_000_000


class Page(HTMLParser):
    """What a browser would see: tags, attributes and text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.ends: list[str] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        self.ends.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def count(self, tag: str) -> int:
        return sum(1 for t, _ in self.tags if t == tag)

    @property
    def all_text(self) -> str:
        return "".join(self.text)


@pytest.fixture()
def sample(tmp_path: Path) -> RunResult:
    return sample_run(tmp_path / "logs")


@pytest.fixture()
def page(sample: RunResult) -> str:
    return html.render(sample)


def test_no_script_and_no_way_out(page: str) -> None:
    assert "<script" not in page.lower()
    parsed = Page(page)
    assert parsed.count("script") == 0
    for tag, attrs in parsed.tags:
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            if name in ("href", "src", "action", "xlink:href"):
                assert (value or "").startswith("#"), (tag, name, value)
    assert not re.search(r"https?:|javascript:|@import|url\(", page)


def test_hostile_text_is_shown_literally(page: str) -> None:
    parsed = Page(page)
    text = parsed.all_text
    # In a patch subject, a test name, a console tail, a log file, a splat, a reason:
    assert text.count(HOSTILE) >= 6
    assert f"Revert {HOSTILE}" in text
    assert f"[    1.0] {HOSTILE}" in text  # console tail of the failed boot
    assert f"# {HOSTILE}" in text  # the test's stdout log file
    assert JINJA in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # "</pre></details>" inside data did not close anything early.
    for tag in ("details", "pre", "table", "section"):
        assert parsed.count(tag) == parsed.ends.count(tag), tag


def test_control_characters_are_shown_not_passed_on(page: str) -> None:
    assert "\x1b" not in page and "\x00" not in page
    assert "\\x1b[31mred\\x1b[0m" in Page(page).all_text


def test_verdict_table_colours_and_words(page: str) -> None:
    table = page[page.index('<table class="verdicts">') : page.index("</table>")]
    cells = re.findall(r'<td class="o (o-[a-z-]+)[^"]*"[^>]*>([^<]*)', table)
    words = {(css, word.strip()) for css, word in cells}
    assert ("o-xfail", "XFAIL (expected)") in words  # expected failure: not red
    assert ("o-unexpected-pass", "UNEXPECTED-PASS") in words
    for css, word in [
        ("o-apply-fail", "APPLY-FAIL"), ("o-kconfig-fail", "KCONFIG-FAIL"),
        ("o-build-fail", "BUILD-FAIL"), ("o-boot-fail", "BOOT-FAIL"), ("o-crash", "CRASH"),
        ("o-kernel-hang", "KERNEL-HANG"), ("o-error", "ERROR"), ("o-skip", "SKIP"),
        ("o-not-run", "NOT-RUN"), ("o-pass", "PASS"), ("o-fail", "FAIL"),
    ]:  # fmt: skip
        assert (css, word) in words, word
    assert ".o-xfail { background: #ddf4ff" in page  # blue, not the red of a failure


def test_variant_details(page: str) -> None:
    text = Page(page).all_text
    assert "conflict in: kernel/fork.c, <script>alert(1)</script>.c" in text
    assert "CONFIG_NEEDS_DEP" in text and f"depends on {HOSTILE}" in text
    assert "kernel/bpf/hashtab.c:3:5: error: 'boom' undeclared" in text
    assert "shared with upstream" in text
    assert "KVM unusable" in text and "3.4s (QEMU start to SSH ready)" in text
    assert "during test crashy" in text and f"{SCRIPT}+0x20" in text
    assert "orchestrate run /work/matrix.yaml --only broken --until build" in text
    # A kernel that built is booted again from the cache; per test from its cell.
    assert "orchestrate reproduce results.json no-boot" in text
    assert "reproduce: orchestrate reproduce results.json pre-fix htab_reuse" in page
    assert "ns_per_op=" in text


def test_logs_are_tails_and_missing_logs_are_noted(page: str) -> None:
    text = Page(page).all_text
    assert "last 200 lines of 1.5 MB" in text
    assert "build line 19999 " in text and "build line 19800 " in text
    assert "build line 19799 " not in text
    assert "gone.stdout — not found" in text


def test_crashed_test_shows_the_console_where_it_died(page: str) -> None:
    text = Page(page).all_text
    assert "console where it died" in text
    assert "orchestrate: begin test crashy" in text


def test_charts_for_metrics_in_several_variants(page: str, sample: RunResult) -> None:
    # map_perf ops_per_sec; the subtest metric map_perf.lookup ns_per_op is not compared
    assert Page(page).count("svg") == 1
    chart = page[page.index("<svg") : page.index("</svg>")]
    assert chart.count("<circle") == 3 + 4  # every sample of upstream and pre-fix
    assert chart.count('<rect class="bar"') == 2
    one = dataclasses.replace(sample, variants=sample.variants[:1])
    assert "<svg" not in html.render(one)  # one variant: a table, nothing to compare


def test_chart_geometry() -> None:
    key = ("t", "m")
    rows = summarize({"a": [10.0, 20.0, 30.0], "b": [40.0]})
    chart = charts.chart(key, rows)
    a, b = chart.bars
    assert [d.x for d in a.dots] == sorted(d.x for d in a.dots)
    assert b.x + b.width == pytest.approx(2 * (a.x + a.width) - a.x)  # 40 is twice 20
    assert chart.ticks[0] == (chart.left, "0") and chart.ticks[-1][0] == chart.right


@pytest.mark.parametrize(
    ("lo", "hi", "ticks"),
    [
        (0.0, 40.0, [0, 10, 20, 30, 40]),
        (0.0, 1.0, [0, 0.5, 1.0]),
        (0.0, 0.0, [0, 0.5, 1.0]),  # no range: still an axis
        (-3.0, 7.0, [-5, 0, 5, 10]),
        (900.0, 2000.0, [500, 1000, 1500, 2000]),
        (0.0, 1_234_567.0, [0, 500_000, 1_000_000, 1_500_000]),
    ],
)
def test_nice_ticks(lo: float, hi: float, ticks: list[float]) -> None:
    assert charts.nice_ticks(lo, hi) == pytest.approx(ticks)


def test_an_incomplete_run_has_a_banner_at_the_top(tmp_path: Path) -> None:
    page = html.render(partial_run(tmp_path))
    banner = page.index('<div class="incomplete" id="incomplete">')
    assert banner < page.index("</header>") < page.index('<section id="verdicts">')
    text = " ".join(Page(page).all_text.split())
    assert f"Incomplete run: {INTERRUPTED}. The results below are partial; not finished: " in text
    assert "upstream, built, applied." in text and "3 variants, all as expected so far" in text
    table = page[page.index('<table class="verdicts">') : page.index("</table>")]
    assert table.count('class="o o-none') == (1 + 3) + (2 + 2)  # stages and tests never reached
    assert "Not reached: kconfig, build, boot, test. The run stopped first" in text  # applied
    assert 'id="incomplete"' not in html.render(sample_run(tmp_path))


def test_all_pass_and_real_results(tmp_path: Path) -> None:
    page = html.render(all_pass(tmp_path))
    assert "1 variant, all as expected" in Page(page).all_text
    real = html.render(real_run())
    text = Page(real).all_text
    for name in ("upstream", "pre-fix", "gfp-zero", "smoke.bpf_jit_enabled"):
        assert name in text
    assert "not found (the log was moved or cleaned up)" in text  # its logs point nowhere
    assert 'Revert "bpf: Zeroing allocated object from slab in bpf memory allocator"' in text
    assert "hostname" in text and "cb94e8e525888920dcb22ac3c8449111b145da17" in text


def _default_matrix_run(folder: Path) -> RunResult:
    """Three variants like the default matrix, with five repeats each and big,
    markup-heavy logs (escaping makes them larger still): distinct files, so
    nothing is shown only once."""
    folder.mkdir(parents=True, exist_ok=True)
    big = folder / "big.log"
    big.write_text(("<b>" * 230 + "\n") * 2000)  # 1.4 MB

    def log(name: str) -> str:
        path = folder / name
        os.link(big, path)  # a new file name, without writing 1.4 MB again
        return str(path)

    subs = tuple(TestResult(f"smoke.s{i}", Verdict.PASS) for i in range(5))
    variants = []
    for name in ("upstream", "pre-fix", "gfp-zero"):
        boot = BootInfo("tcg", "probe", 3.0, log(f"{name}-console.log"))
        tests = tuple(
            TestResult(
                "smoke",
                Verdict.PASS,
                logs=(log(f"{name}{i}.out"), log(f"{name}{i}.err")),
                metrics={"ops": float(i)},
                subtests=subs,
                repeat=i,
            )
            for i in range(1, 6)
        )
        stages = tuple(
            dataclasses.replace(s, logs=(log(f"{name}-{s.stage.value}.log"),))
            for s in _stages(*[Status.PASS] * 5)
        )
        variants.append(VariantResult(name, stages, build=_build(), boot=boot, tests=tests))
    return RunResult("/m.yaml", "s", "f", tuple(variants))


def test_size_stays_under_2mb_with_huge_logs(tmp_path: Path) -> None:
    page = html.render(_default_matrix_run(tmp_path))
    size = len(page.encode())
    assert size < 2 * MB
    assert "log budget is spent" in page  # and the report says what it left out


def test_log_budget_is_shared_and_per_file_cap_holds(tmp_path: Path) -> None:
    logs = html.Logs(budget=100_000)
    path = tmp_path / "huge.log"
    path.write_text("y" * 10 * MB)  # one line, no newline
    first = logs.tail(str(path))
    assert first.excerpt.truncated and len(first.excerpt.text) == LOG_BYTES
    again = logs.tail(str(path))
    assert again.repeat and again.anchor == first.anchor  # shown once, linked after
    other = tmp_path / "other.log"
    other.write_text(("<" * 300 + "\n") * 200)  # 60 kB that escape to 240 kB
    assert "budget" in logs.tail(str(other)).excerpt.missing


def test_templates_ship_with_the_package() -> None:
    template = resources.files("orchestrator.report") / "templates" / "report.html.j2"
    assert template.is_file()
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert '"report/templates/*.j2"' in pyproject


def _with_about(run: RunResult) -> RunResult:
    """pre-fix's htab_reuse subtests say what they show (one of them in markup)."""
    pre = run.variants[1]
    htab = next(t for t in pre.tests if t.name == "htab_reuse")
    update, lock = htab.subtests
    subs = (
        dataclasses.replace(update, about="problem 2: another key's element"),
        dataclasses.replace(lock, about=f"problem 1: {SCRIPT} lock reset"),
    )
    tests = tuple(dataclasses.replace(t, subtests=subs) if t is htab else t for t in pre.tests)
    return dataclasses.replace(
        run, variants=(run.variants[0], dataclasses.replace(pre, tests=tests), *run.variants[2:])
    )


def test_about_is_shown_next_to_its_subtest(sample: RunResult) -> None:
    page = html.render(_with_about(sample))
    rows = re.findall(r'<td class="name mono">(.*?)</td>', page)
    assert 'htab_reuse.update<div class="about">problem 2: another key&#39;s element</div>' in rows
    lock = next(r for r in rows if r.startswith("htab_reuse.lock"))
    assert "problem 1: &lt;script&gt;alert(1)&lt;/script&gt; lock reset" in lock
    assert "<script" not in page.lower()
    # A subtest without an about, and every test of a run without any, get no line.
    assert "htab_reuse<" not in "".join(r for r in rows if "about" in r)
    assert 'class="about"' not in html.render(sample)


def test_logs_outside_the_run_directory_are_not_read(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run = pointing_out(run_dir, tmp_path / "id_ed25519")
    page = html.render(run, log_dirs=log_dirs(run_dir))
    assert SECRET not in page
    for name in ("id_ed25519", "link.log"):
        assert f"{name} — {escape(OUTSIDE)}" in page
    assert "ok 1 smoke" in page  # the log inside, named relative to the run directory


def test_bidi_controls_are_shown_not_applied(tmp_path: Path) -> None:
    page = html.render(pointing_out(tmp_path / "run", tmp_path / "id"))
    assert "\u202e" not in page and "exit 1: &lt;U+202E&gt;gnp.exe" in page


def test_a_counted_splat_says_how_many(tmp_path: Path) -> None:
    run = sample_run(tmp_path)
    variant = next(v for v in run.variants if any(t.splats for t in v.tests))
    test = next(t for t in variant.tests if t.splats)
    counted = dataclasses.replace(test, splats=(dataclasses.replace(test.splats[0], count=7),))
    tests = tuple(counted if t is test else t for t in variant.tests)
    variants = tuple(
        dataclasses.replace(v, tests=tests) if v is variant else v for v in run.variants
    )
    page = html.render(dataclasses.replace(run, variants=variants))
    assert "\u00d77" in page  # the multiplication sign, 7
    assert "\u00d71" not in html.render(run)
