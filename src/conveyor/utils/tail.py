"""Following a growing log file, as `tail -f` does, until the writer is done."""

from __future__ import annotations

import os
from typing import Callable, Iterator


def tail_file(path: str, follow: bool, finished: Callable[[], bool], wait: Callable[[], None]) -> Iterator[str]:
    """Yield complete lines; with `follow`, keep going until `finished()` and the file is drained."""
    while follow and not os.path.exists(path):
        if finished():
            return
        wait()
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8", errors="replace") as fh:
        partial = ""
        while True:
            chunk = fh.read(65536)
            if chunk:
                partial += chunk
                *lines, partial = partial.split("\n")
                for line in lines:
                    yield line + "\n"
                continue
            if not follow or finished():
                rest = fh.read()  # written between the last read and the end
                if rest:
                    partial += rest
                    continue
                if partial:
                    yield partial
                return
            wait()
