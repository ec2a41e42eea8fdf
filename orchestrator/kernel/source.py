"""The git cache of the kernel tree.

Every kind of tree ends up as a bare git repository in the cache plus a base
commit; variants are applied and built in worktrees of that repository.

* Debian's linux-source tarball is imported once, keyed by its sha256.  Its
  top-level .gitignore contains ``/*``, so files are added with force.
* A git URL + ref is fetched into one bare cache per URL.
* A local tree is used read-only: the cache borrows its objects through
  git alternates and never writes to it.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from orchestrator import proc
from orchestrator.errors import InfraError, UserError
from orchestrator.git import git, rev_parse
from orchestrator.matrix import Tree, TreeKind

BASE_REF = "refs/orchestrate/base"
# A fixed date makes the imported commit, and so every commit built on it,
# the same on every machine.
IMPORT_DATE = "2000-01-01T00:00:00+0000"


@dataclass(frozen=True)
class Source:
    repo: Path  # a bare repository in the cache
    base: str  # the commit variants are applied on


def cache_path(tree: Tree, cache: Path) -> Path:
    """Where the tree's repository lives; pure, so `plan` can use it."""
    if tree.kind is TreeKind.DEBIAN:
        key = f"debian-{file_digest(Path(tree.location))[:16]}"
    else:
        key = f"{tree.kind.value}-{hashlib.sha256(tree.location.encode()).hexdigest()[:16]}"
    return cache / "trees" / f"{key}.git"


def cached_base(tree: Tree, cache: Path) -> str | None:
    """The base commit last prepared for this tree, if any (touches nothing).

    For git URLs and local trees the ref may have moved since; prepare()
    fetches again.
    """
    repo = cache_path(tree, cache)
    if not (repo / "HEAD").exists():
        return None
    result = git(repo, "rev-parse", "--verify", "--quiet", BASE_REF, check=False)
    return result.stdout.strip() or None


def prepare(tree: Tree, cache: Path) -> Source:
    """The tree in the cache, and its base commit.  Call with the cache locked."""
    repo = cache_path(tree, cache)
    clear_stale_locks(repo)
    if tree.kind is TreeKind.DEBIAN:
        if cached_base(tree, cache) is None:
            _import_tarball(Path(tree.location), repo)
    elif tree.kind is TreeKind.GIT:
        _fetch(repo, tree.location, tree.ref or "HEAD")
    else:
        _borrow(repo, Path(tree.location), tree.ref or "HEAD")
    return Source(repo=repo, base=rev_parse(repo, BASE_REF))


def clear_stale_locks(repo: Path) -> list[Path]:
    """Remove git's lock files left by a git that was killed (index.lock, HEAD.lock, …).

    Only a run holding the cache lock may call this: then no git of ours
    runs in the cache, and every lock file is a dead one's.  Left alone,
    each would fail every later run.
    """
    if not repo.is_dir():
        return []
    found = [
        *repo.glob("*.lock"),
        *repo.glob("refs/**/*.lock"),
        *repo.glob("worktrees/*/*.lock"),
    ]
    for lock in found:
        lock.unlink(missing_ok=True)
    return found


def file_digest(path: Path) -> str:
    """sha256 of a file; remembered per (path, size, mtime) for this process.

    The tarball key is needed by plan, the CLI and prepare in one run, and
    hashing 138 MB each time cost ~0.3 s a call.
    """
    st = path.stat()
    return _digest(path.resolve(), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _digest(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _import_tarball(tarball: Path, repo: Path) -> None:
    """Extract, commit with force, keep only the bare repository."""
    staging = repo.with_name(repo.name + ".importing")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    proc.run(
        ["tar", "-xf", tarball, "-C", staging, "--strip-components=1", "--no-same-owner"],
        timeout=1800,
    ).check()
    git(staging, "init", "-q")
    git(staging, "add", "-f", "-A", timeout=3600)
    env = {"GIT_AUTHOR_DATE": IMPORT_DATE, "GIT_COMMITTER_DATE": IMPORT_DATE}
    git(staging, "commit", "-q", "-m", f"Import {tarball.name}", env=env, timeout=3600)
    git(staging, "update-ref", BASE_REF, "HEAD")
    # The import is complete only once the bare repository is in place.
    shutil.rmtree(repo, ignore_errors=True)
    (staging / ".git").rename(repo)
    git(repo, "config", "core.bare", "true")
    shutil.rmtree(staging)


def _fetch(repo: Path, url: str, ref: str) -> None:
    if not (repo / "HEAD").exists():
        repo.mkdir(parents=True, exist_ok=True)
        git(repo, "init", "-q", "--bare")
    result = git(repo, "fetch", "--no-tags", url, f"+{ref}:{BASE_REF}", check=False, timeout=7200)
    if not result.ok:
        raise InfraError(f"cannot fetch {ref} from {url}:\n{result.stderr.strip()[-2000:]}")


def _borrow(repo: Path, tree: Path, ref: str) -> None:
    """Fetch from a local repository without writing to it."""
    objects = git(tree, "rev-parse", "--path-format=absolute", "--git-common-dir")
    if not (repo / "HEAD").exists():
        repo.mkdir(parents=True, exist_ok=True)
        git(repo, "init", "-q", "--bare")
    alternates = repo / "objects" / "info" / "alternates"
    alternates.write_text(str(Path(objects.stdout.strip()) / "objects") + "\n")
    result = git(repo, "fetch", "--no-tags", tree, f"+{ref}:{BASE_REF}", check=False)
    if not result.ok:
        raise UserError(f"{tree}: cannot read ref {ref!r}:\n{result.stderr.strip()[-2000:]}")


_WORKTREES = threading.Lock()


def worktree(source: Source, path: Path) -> Path:
    """A worktree of the cache at path, created on first use.

    Existing worktrees are reused as they are: switching commits in them
    rewrites only the files that differ, which keeps make incremental.
    """
    with _WORKTREES:  # units in threads: a prune must not race another's add
        if (path / ".git").exists():
            return path
        shutil.rmtree(path, ignore_errors=True)
        git(source.repo, "worktree", "prune")
        path.parent.mkdir(parents=True, exist_ok=True)
        git(source.repo, "worktree", "add", "-q", "--detach", path, source.base, timeout=1800)
        return path


def checkout(worktree_path: Path, commit: str) -> None:
    git(worktree_path, "checkout", "-q", "-f", "--detach", commit, timeout=1800)
