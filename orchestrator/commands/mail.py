"""`orchestrate reply` and `orchestrate export`: a finished run's results, elsewhere.

reply writes (and, if told, sends) the verdict as a mail in the series'
thread (the mail itself is `orchestrator.reply`); export writes KCIDB or
patchwork records.  Nothing runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from orchestrator import reply, results
from orchestrator.commands import Subparsers
from orchestrator.commands.common import shown
from orchestrator.errors import UserError
from orchestrator.export import kcidb, patchwork
from orchestrator.results import RunResult

NAMES: tuple[str, ...] = ("reply", "export")


def add_parsers(sub: Subparsers) -> None:
    _reply_parser(sub)
    _export_parser(sub)


def _reply_parser(sub: Subparsers) -> None:
    text = "write the run's verdict as a reply to the series' thread (.eml); sends only if told"
    cmd = sub.add_parser(
        "reply",
        help=text,
        description=text + ": In-Reply-To the cover letter (or first patch), the text summary "
        "inline, report.html attached, to the author with the thread's lists and people in Cc",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  orchestrate reply reports/bpf/20261206-101500/results.json   (writes reply.eml there)\n"
        "  orchestrate reply RESULTS.json --send smtp --smtp smtp.example.org:587 "
        "--smtp-user me\n"
        "  orchestrate reply RESULTS.json --send git   (git send-email, as you configured it)\n"
        f"the SMTP password comes from ${reply.PASSWORD_ENV}, else it is asked for",
    )
    cmd.add_argument("results", type=Path, help="a results.json written by `orchestrate run`")
    cmd.add_argument("--variant", default=None, help="whose series to answer (when several)")
    cmd.add_argument(
        "--out", type=Path, default=None, help="the .eml (default: reply.eml beside the results)"
    )
    cmd.add_argument(
        "--from",
        dest="sender",
        default=None,
        metavar="'NAME <ADDR>'",
        help="the sender (default: git's user.name and user.email)",
    )
    for flag, what in (
        ("--to", "an addressee besides the thread's (repeatable; the only one, outside any "
         "thread, when the results record no mail)"),
        ("--cc", "a copy besides the thread's (repeatable)"),
    ):  # fmt: skip
        cmd.add_argument(flag, action="append", default=[], metavar="ADDR", help=what)
    cmd.add_argument(
        "--attach",
        choices=[a.value for a in reply.Attach],
        default=reply.Attach.HTML.value,
        help="report.html as HTML, gzipped (for lists that refuse HTML parts) or not at all",
    )
    cmd.add_argument(
        "--send", choices=("smtp", "git"), default=None, help="send it (default: only write it)"
    )
    cmd.add_argument(
        "--smtp",
        default=os.environ.get("ORCHESTRATE_SMTP"),
        metavar="HOST:PORT",
        help="the server for --send smtp (default: $ORCHESTRATE_SMTP)",
    )
    cmd.add_argument(
        "--smtp-security",
        choices=("auto", *(s.value for s in reply.Security)),
        default="auto",
        help="auto: none on this machine, ssl on port 465, else starttls",
    )
    cmd.add_argument("--smtp-user", default=None, metavar="USER", help="log in as this user")


def _export_parser(sub: Subparsers) -> None:
    text = "write a run's results for another system: KCIDB v5 JSON or patchwork checks"
    cmd = sub.add_parser(
        "export",
        help=text,
        description=text + "; nothing is posted anywhere",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  orchestrate export --kcidb reports/bpf/20261206-101500/results.json --out kcidb.json\n"
        "  orchestrate export --patchwork RESULTS.json "
        "--report-url https://ci.example.org/bpf/report.html",
    )
    kind = cmd.add_mutually_exclusive_group(required=True)
    kind.add_argument("--kcidb", action="store_true", help="KCIDB v5 JSON, checked with kcidb-io")
    kind.add_argument(
        "--patchwork", action="store_true", help="check records for /api/patches/{id}/checks/"
    )
    cmd.add_argument("results", type=Path, help="a results.json written by `orchestrate run`")
    cmd.add_argument("--out", type=Path, default=None, help="the file (default: standard output)")
    cmd.add_argument(
        "--origin", default=None, help=f"KCIDB origin (default: {kcidb.DEFAULT_ORIGIN})"
    )
    cmd.add_argument(
        "--context",
        default=None,
        help=f"patchwork context prefix (default: {patchwork.DEFAULT_CONTEXT})",
    )
    cmd.add_argument("--report-url", default=None, help="where report.html is published")


def run(ns: argparse.Namespace) -> int:
    try:
        done = results.read_given(ns.results)
        return _reply(ns, done) if ns.command == "reply" else _export(ns, done)
    except KeyboardInterrupt:  # at the password prompt, or while sending
        print("orchestrate: interrupted", file=sys.stderr)
        return 130


def _reply(ns: argparse.Namespace, run: RunResult) -> int:
    server = None
    if ns.send == "smtp":
        if not ns.smtp:
            raise UserError("--send smtp needs --smtp HOST:PORT (or $ORCHESTRATE_SMTP)")
        security = None if ns.smtp_security == "auto" else reply.Security(ns.smtp_security)
        server = reply.Smtp.parse(ns.smtp, security, ns.smtp_user)
    variant = reply.choose(run, ns.variant, ns.results)
    sender = ns.sender or reply.default_sender()
    if sender is None:
        raise UserError("no sender: give --from 'Name <you@example.org>' (or set git's user.email)")
    attach = reply.Attach(ns.attach)
    html = None if attach is reply.Attach.NONE else reply.report_html(ns.results, run)
    answer = reply.build(
        run, variant, sender=sender, html=html, to=ns.to, cc=ns.cc, attach=attach,
        where=ns.results,
    )  # fmt: skip
    out = ns.out or ns.results.parent / "reply.eml"
    try:
        reply.write(answer, out)
    except OSError as exc:
        raise UserError(f"{out}: cannot write the reply: {exc.strerror or exc}") from None
    print(f"reply: {out}")
    for key in ("To", "Cc", "Subject", "In-Reply-To"):
        if answer.message[key]:
            print(shown(f"  {key}: {answer.message[key]}", one_line=True))
    if server is not None:
        refused = reply.send_smtp(answer, server)
        print(f"sent through {server.host}:{server.port}")
        if refused:
            print(shown(f"orchestrate: warning: refused: {', '.join(refused)}"), file=sys.stderr)
    elif ns.send == "git":
        reply.send_git(answer, out)
        print("sent with git send-email")
    else:
        print("nothing sent (--send smtp or --send git sends it)")
    return 0


def _export(ns: argparse.Namespace, run: RunResult) -> int:
    if ns.kcidb:
        if ns.context or ns.report_url:
            raise UserError("--context and --report-url are for --patchwork")
        text = kcidb.dumps(kcidb.render(run, origin=ns.origin or kcidb.DEFAULT_ORIGIN))
    else:
        if ns.origin:
            raise UserError("--origin is for --kcidb")
        data = patchwork.render(
            run, context=ns.context or patchwork.DEFAULT_CONTEXT, target_url=ns.report_url
        )
        text = patchwork.dumps(data)
    if ns.out is None or str(ns.out) == "-":
        sys.stdout.write(text)
        return 0
    try:
        tmp = ns.out.with_name(ns.out.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(ns.out)
    except OSError as exc:
        raise UserError(f"{ns.out}: cannot write: {exc.strerror or exc}") from None
    print(f"{'kcidb' if ns.kcidb else 'patchwork'}: {ns.out}")
    return 0
