"""`--compare REV`: another revision of Conveyor, checked out into a temporary `git worktree` for the benchmark.

The measurements then run the current bench/ scripts against that revision's `src/` (first on PYTHONPATH, which
wins over the editable install), so the scripts use only public APIs that both revisions have. The worktree is
removed at the end, whatever happens.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common import HERE, Side

__all__ = ["revision_tree"]

REPO = HERE.parent


def _git(*args: str) -> str:
    proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


@contextmanager
def revision_tree(rev: str) -> Iterator[Side]:
    """The Side of `rev` (any commit-ish), checked out detached into a temporary worktree for the duration."""
    sha = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-rev-"))
    tree = tmp / "tree"
    _git("worktree", "add", "--detach", "--quiet", str(tree), sha)
    try:
        if not (tree / "src" / "conveyor" / "__init__.py").exists():
            raise RuntimeError(f"{rev} ({sha[:8]}) has no src/conveyor/")
        yield Side(f"{rev} ({sha[:8]})", tree / "src")
    finally:
        try:
            _git("worktree", "remove", "--force", str(tree))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], capture_output=True, check=False)
