"""Redaction of a stream that arrives in pieces: a value written in two writes must not get through.

Redacting each write on its own misses `print(v[:6], end=""); print(v[6:])`. A `StreamRedactor` holds back
only the shortest tail that could still be the start of a secret value, so everything else reaches the log and
the terminal at once (progress bars stay live) and no value is ever split across two emitted pieces. What is held
back is emitted at `finish()`; it is never a whole value, and without the rest it is never the value either.
Imported by the remote side of a step: standard library only.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable

from conveyor.secrets.references import redact

__all__ = ["MIN_SECRET_LENGTH", "StreamRedactor"]

#: shorter values are not redacted (see `references.redact`): nothing to hold back for them
MIN_SECRET_LENGTH = 3


class StreamRedactor:
    """`feed()` each piece as it comes and write what it returns; write what `finish()` returns at the end.

    `values` is called on every feed, so values resolved while the stream runs are redacted from then on.
    Thread-safe: a step's threads may print at once.
    """

    def __init__(self, values: Callable[[], Iterable[str]]) -> None:
        self._values = values
        self._held = ""
        self._lock = threading.Lock()

    def feed(self, text: str) -> str:
        values = frozenset(v for v in self._values() if len(v) >= MIN_SECRET_LENGTH)
        with self._lock:
            raw = self._held + text
            if not values:
                self._held = ""
                return raw
            cut = _safe_cut(raw, values)
            self._held = raw[cut:]
            return redact(raw[:cut], values)

    def finish(self) -> str:
        """The tail held back, redacted: the stream ended, so it can no longer become a value."""
        values = frozenset(v for v in self._values() if len(v) >= MIN_SECRET_LENGTH)
        with self._lock:
            rest, self._held = self._held, ""
            return redact(rest, values) if values else rest


def _safe_cut(raw: str, values: frozenset[str]) -> int:
    """Where to split `raw` into what can be emitted (redacted) now and what must wait for more text.

    No value may straddle the cut: neither one that may continue in later writes (the rest of `raw` from its
    start is a proper prefix of it) nor one already whole that ends after the cut (redacting the emitted part
    alone would miss it). So a value is always redacted in one piece, whatever the writes were.
    """
    longest = max(len(v) for v in values)
    firsts = {v[0] for v in values}
    cut = len(raw)
    for i in range(max(0, len(raw) - longest + 1), len(raw)):
        if raw[i] in firsts and any(len(v) > len(raw) - i and v.startswith(raw[i:]) for v in values):
            cut = i
            break
    moved = True
    while moved:
        moved = False
        for v in values:
            start = raw.find(v, max(0, cut - len(v) + 1))
            if -1 < start < cut < start + len(v):
                cut, moved = start, True
    return cut
