"""Files and directories readable by this user only: what Conveyor keeps (store, logs, job specs) is private.

The modes are given at creation, not left to the umask (0022 makes files world-readable); a umask can only take
bits away from them. Standard library only: the remote side of a step uses it too.
"""

from __future__ import annotations

import os

__all__ = ["DIR_MODE", "FILE_MODE", "create_private_file", "private_makedirs", "private_opener"]

DIR_MODE, FILE_MODE = 0o700, 0o600


def private_makedirs(path: str | os.PathLike[str]) -> None:
    """os.makedirs(path, exist_ok=True) with DIR_MODE for every directory it creates (os.makedirs gives the mode
    to the last one only); existing directories are left as they are."""
    missing: list[str] = []
    current = os.path.abspath(os.fspath(path))
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise


def private_opener(path: str, flags: int) -> int:
    """For open(..., opener=private_opener): a file it creates gets FILE_MODE."""
    return os.open(path, flags, FILE_MODE)


def create_private_file(path: str | os.PathLike[str]) -> None:
    """Create `path` empty with FILE_MODE unless it exists (e.g. a SQLite database before SQLite opens it)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        pass
