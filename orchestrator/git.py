"""The git runner: every git command goes through here (and through proc).

The user's and the system's git config are ignored and identities are fixed,
so results do not depend on who runs the tool.  The process cwd is never
changed: the repository is passed with -C.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator import proc

GIT_ENV = {
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "orchestrate",
    "GIT_AUTHOR_EMAIL": "orchestrate@localhost",
    "GIT_COMMITTER_NAME": "orchestrate",
    "GIT_COMMITTER_EMAIL": "orchestrate@localhost",
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
}


def git(
    repo: Path,
    *args: str | Path,
    check: bool = True,
    timeout: float = 600.0,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> proc.CmdResult:
    """Run `git -C repo args...`; raise CommandFailed unless check=False."""
    result = proc.run(
        ["git", "--no-pager", "-C", str(repo), *[str(a) for a in args]],
        timeout=timeout,
        env={**GIT_ENV, **(env or {})},
        stdin=stdin,
    )
    return result.check() if check else result


def rev_parse(repo: Path, rev: str) -> str:
    return git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").stdout.strip()


def tree_of(repo: Path, rev: str) -> str:
    return git(repo, "rev-parse", "--verify", f"{rev}^{{tree}}").stdout.strip()
