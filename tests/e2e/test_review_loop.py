"""The review loop, for real: a two-revision series from an mbox through b4 into a run
of Debian's 6.1 kernel, and a reply to its thread.

The thread (written here, as tests/integration/test_mail.py writes its own)
holds v1 and v2 of a two-patch series that changes a comment in
kernel/bpf/memalloc.c, so the variant's build is incremental.  The matrix
runs upstream and that variant with the smoke test only.  b4 must choose
v2, the kernel must be built from it and boot, results.json must record the
series, and `orchestrate reply` must answer the v2 cover letter.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator import config, proc, results
from orchestrator.cache import Cache
from orchestrator.git import git
from orchestrator.kernel import source
from orchestrator.results import PatchOutcome, Status, Verdict
from tests.integration.test_mail import (
    AUTHOR,
    LIST,
    one_line_diff,
    series_thread,
    write_mbox,
)

from .conftest import REPO

pytestmark = pytest.mark.e2e

MEMALLOC = "kernel/bpf/memalloc.c"
FRAGMENTS = ("base.config", "vm.config", "bpf.config", "debug.config")


def _comment_series(lines: list[str]) -> dict[int, list[tuple[str, str]]]:
    """v1 and v2 of two patches, each rewording line 2 of memalloc.c (a comment)."""
    context = lines[:5]
    original = context[1]
    assert original.startswith("/*") and original.endswith("*/"), original
    first = original[:-2] + "(reviewed) */"
    after_first = [context[0], first, *context[2:]]
    series: dict[int, list[tuple[str, str]]] = {}
    for version in (1, 2):
        final = original[:-2] + f"(review loop v{version}) */"
        series[version] = [
            ("bpf: mark memalloc reviewed", one_line_diff(MEMALLOC, context, 2, original, first)),
            ("bpf: name the review loop", one_line_diff(MEMALLOC, after_first, 2, first, final)),
        ]
    return series


def _cli(*args: str | Path, timeout: float = 3000) -> proc.CmdResult:
    return proc.run([sys.executable, "-m", "orchestrator.cli", *args], timeout=timeout)


def test_a_series_from_the_list_is_run_and_answered(e2e_cache: Path, tmp_path: Path) -> None:
    tree = config.load(REPO / "matrix-quick.yaml").tree
    with Cache(e2e_cache).locked():
        src = source.prepare(tree, e2e_cache)
    lines = git(src.repo, "show", f"{src.base}:{MEMALLOC}").stdout.splitlines()
    write_mbox(
        tmp_path / "thread.mbox", series_thread("e2e", _comment_series(lines), base=src.base)
    )
    frags = ", ".join(str(REPO / "kconfigs" / f) for f in FRAGMENTS)
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(
        textwrap.dedent(f"""\
        name: review-loop
        kconfig: {{fragments: [{frags}]}}
        guest: {{boot_timeout: 60, selftests: {REPO / "selftests"}}}
        tests:
          - {{name: smoke, kind: ktap, command: /opt/selftests/smoke.sh, timeout: 60}}
        variants:
          - name: upstream
          - name: from-list
            series: {{mbox: thread.mbox, message-id: e2e.v1-0-ann@example.org}}
        """)
    )
    out = tmp_path / "out"
    ran = _cli(matrix, "--cache-dir", e2e_cache, "--out", out)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    run_ = results.read(out / "results.json")
    by = {v.name: v for v in run_.variants}
    variant = by["from-list"]
    assert all(s.status is Status.PASS for s in variant.stages), variant.stages
    assert [t.verdict for t in variant.tests] == [Verdict.PASS]

    # b4 chose v2: its patches were applied, and the kernel was built from them.
    mail = variant.mail
    assert mail is not None
    assert (mail.revision, mail.message_id) == (2, "e2e.v2-0-ann@example.org")
    assert mail.base_commit == src.base and mail.author == AUTHOR and LIST in mail.to
    assert [p.message_id for p in mail.patches] == [f"e2e.v2-{i}-ann@example.org" for i in (1, 2)]
    assert [p.outcome for p in variant.patches] == [PatchOutcome.APPLIED] * 2
    built = git(src.repo, "show", f"{variant.head}:{MEMALLOC}").stdout
    assert "(review loop v2) */" in built and "v1) */" not in built
    assert variant.build is not None and by["upstream"].build is not None
    assert variant.build.tree != by["upstream"].build.tree
    raw = json.loads((out / "results.json").read_text())
    assert raw["variants"][1]["mail"]["patches"][0]["patch_id"] == mail.patches[0].patch_id
    assert "<e2e.v2-0-ann@example.org>" in " ".join((out / "summary.txt").read_text().split())

    # The reply answers the v2 cover letter, with the report attached.
    replied = _cli("reply", out / "results.json", "--from", "CI Bot <ci@example.org>", timeout=120)
    assert replied.returncode == 0, replied.stdout + replied.stderr
    msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(
        (out / "reply.eml").read_bytes()
    )
    assert msg["In-Reply-To"] == "<e2e.v2-0-ann@example.org>"
    assert "<e2e.v2-0-ann@example.org>" in msg["References"]
    assert msg["Subject"].startswith("Re: [PATCH v2 0/2]")
    assert "ann@example.org" in msg["To"] and LIST in f"{msg['To']} {msg['Cc']}"
    names = [part.get_filename() for part in msg.iter_attachments()]
    assert "report.html" in names
