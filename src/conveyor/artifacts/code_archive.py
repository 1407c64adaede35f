"""The content-hashed code archive: how a step's code reaches a machine that does not share our filesystem.

The archive holds the Python files under the step's code root, zipped deterministically, stored once per content
hash at `code/<sha256>.zip` in the artifact store. The remote side extracts it into a cache keyed by the same hash,
so an unchanged project is uploaded and unpacked once, and a code change never needs an image build.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor.artifacts.store import ArtifactStore

SKIP_DIRS = frozenset({".git", ".hg", ".venv", "venv", "env", "__pycache__", ".conveyor", "node_modules", ".mypy_cache",
                       ".pytest_cache", ".ruff_cache", ".tox", ".nox", "build", "dist", ".eggs", "site-packages"})
MAX_FILES = 20_000
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def code_files(root: Path) -> list[Path]:
    """The Python files under `root`, sorted, skipping virtual environments, VCS and build folders."""
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        files += [Path(dirpath, f) for f in sorted(filenames) if f.endswith(".py")]
        if len(files) > MAX_FILES:
            raise ValueError(f"more than {MAX_FILES} Python files under {root}: is the code root right?")
    return files


def build(root: str | Path) -> tuple[str, bytes]:
    """(sha256 of the content, zip bytes); the same files always give the same bytes."""
    root = Path(root)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in code_files(root):
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=_FIXED_TIME)
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())
    data = buf.getvalue()
    return hashlib.sha256(data).hexdigest(), data


def upload(store: "ArtifactStore", root: str | Path) -> str:
    """Store the archive of `root` unless the same content is there already; return its URI."""
    digest, data = build(root)
    uri = store.join("code", f"{digest}.zip")
    if not store.exists(uri):
        store.write_bytes(uri, data)
    return uri


def cache_dir() -> Path:
    return Path(os.environ.get("CONVEYOR_CODE_CACHE") or Path.home() / ".cache" / "conveyor" / "code")


def materialize(uri: str, store: "ArtifactStore") -> str:
    """Extract the archive at `uri` once per content hash; returns the directory to put on sys.path."""
    digest = uri.rsplit("/", 1)[-1].removesuffix(".zip")
    target = cache_dir() / digest
    if target.is_dir():
        return str(target)
    data = store.read_bytes(uri)
    if hashlib.sha256(data).hexdigest() != digest:
        raise ValueError(f"code archive {uri} does not match its hash: it is corrupted; re-run to upload it again")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=target.parent))
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            zf.extractall(tmp)
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.is_dir():  # a concurrent step may have put it there first
            raise
    return str(target)
