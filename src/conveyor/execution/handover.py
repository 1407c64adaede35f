"""Large arrays handed from one in-process step to the next in memory, beside the stored copy.

An in-process step's output is always saved to the artifact store (lineage, caching, `load()` later). When the
output is a large ndarray that exactly one step reads, and that step runs in this process too, the reader gets the
producer's array itself instead of mapping the file just written: no second pass over the data, and the file's
pages need not stay in the page cache (it is written `Writing.PAST_THE_CACHE`, see `artifacts/materializers/_npy.py`).

That is only the same as loading when nothing else can see the array: it must own its memory (not a view of
something another object holds), be writable (as a loaded copy-on-write map is), and at hand-over time no
reference to it may remain outside this registry (the producer did not keep it in a global, say): otherwise the
reader's in-place changes would show there. A value that fails any of these is loaded from the store as usual.
A retried reader loads from the store (the first attempt may have changed the array); what no reader takes is
dropped when the run ends.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["HANDOVER_MIN_BYTES", "Handover", "can_hand_over"]

#: below this, mapping the stored file costs next to nothing: only large arrays are held
HANDOVER_MIN_BYTES = 64 << 20


def can_hand_over(value: Any) -> bool:
    """A plain ndarray the reader may have as its own: it owns its (writable) memory and is large."""
    from conveyor.artifacts.materializers._npy import owns_large_buffer

    return owns_large_buffer(value, HANDOVER_MIN_BYTES) and value.flags.writeable


class Handover:
    """The values of one run waiting for their one in-process reader, by artifact URI."""

    def __init__(self) -> None:
        self._held: dict[str, Any] = {}
        self._lock = threading.Lock()

    def offer(self, values: Mapping[str, Any]) -> None:
        """Hold these (artifact URI -> value, each already saved there) for their reader."""
        with self._lock:
            self._held.update(values)

    def take(self, uris: Mapping[str, str]) -> dict[str, Any]:
        """The held values among `uris` (argument -> artifact URI) that no one else references, by argument;
        each is taken once. The rest are for the caller to load."""
        taken: dict[str, Any] = {}
        for arg, uri in uris.items():
            with self._lock:
                value = self._held.pop(uri, None)
            # this frame's name and getrefcount's own argument: any other reference means someone could see the
            # reader's in-place changes
            if value is not None and sys.getrefcount(value) <= 2:
                taken[arg] = value
            value = None
        return taken

    def clear(self) -> None:
        with self._lock:
            self._held.clear()
