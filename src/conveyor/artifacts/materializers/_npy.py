"""Writing an ndarray as `.npy` in one pass, hashing it as it goes.

`np.save` writes the same bytes, but the manifest then needs the file's SHA-256, which meant reading the file
back (a second pass over a 1 GiB array). Here the digest comes from the array's own memory, on a second thread
while the main one writes (hashlib and the write both release the GIL), and the data goes out as slices of the
array's buffer: no intermediate copy, unlike `np.save` to a file object, which copies 16 MiB chunks.

Inside `past_the_page_cache()` (an array handed to its reader in memory, execution/handover.py: nobody reads the
file soon) a local file is written chunk by chunk, each chunk flushed to disk and dropped from the page cache:
the same few pages serve the whole write instead of as many fresh ones as the array has bytes, which on a virtual
machine cost more than the disk write itself (touching memory the host has taken back).
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, Any

__all__ = ["past_the_page_cache", "write_npy"]

_PAST_THE_CACHE: ContextVar[bool] = ContextVar("conveyor_npy_past_the_cache", default=False)

#: below this the digest runs inline: starting a thread costs more than it saves
_THREAD_MIN_BYTES = 8 << 20
#: one write call per slice: a remote store's file buffers what it is given (np.save hands it 16 MiB at a time
#: too), and 64 calls per GiB cost nothing on local disk
_CHUNK = 16 << 20


def write_npy(fh: IO[bytes], array: Any) -> tuple[int, str] | None:
    """Write `array` to `fh` exactly as `np.save(fh, array, allow_pickle=False)` would; return (size, sha256 hex)
    of what was written. None, having written nothing, for an array this fast path does not cover (not
    contiguous in memory, or a header that needs .npy format 2 or 3): the caller saves those with `np.save`."""
    import numpy as np
    from numpy.lib import format as npy_format

    if not isinstance(array, np.ndarray) or array.dtype.hasobject:
        return None
    if array.flags.c_contiguous:
        flat = array.reshape(-1)
    elif array.flags.f_contiguous:
        flat = array.T.reshape(-1)  # the header says fortran_order; the bytes are the array's memory order
    else:
        return None
    header = io.BytesIO()
    try:
        npy_format.write_array_header_1_0(header, npy_format.header_data_from_array_1_0(array))
        data = memoryview(flat.view(np.uint8))
    except ValueError:  # a header too long for format 1.0 or names beyond latin-1 (np.save picks the version),
        return None  # or items of size 0, which have no bytes to view
    head = header.getvalue()
    digest = hashlib.sha256(head)
    hasher = _start_hashing(digest, data)
    fd = _local_fd(fh) if _PAST_THE_CACHE.get() else None
    try:
        fh.write(head)
        for start in range(0, len(data), _CHUNK):
            fh.write(data[start:start + _CHUNK])
            if fd is not None:
                fh.flush()
                os.fdatasync(fd)  # written back: now the pages can be dropped (dirty ones would stay)
                os.posix_fadvise(fd, 0, len(head) + start + _CHUNK, os.POSIX_FADV_DONTNEED)
    finally:
        if hasher is not None:
            hasher.join()
    return len(head) + len(data), digest.hexdigest()


@contextmanager
def past_the_page_cache() -> Iterator[None]:
    """Arrays written meanwhile (to a local file) leave nothing in the page cache: see the module's docstring."""
    token = _PAST_THE_CACHE.set(True)
    try:
        yield
    finally:
        _PAST_THE_CACHE.reset(token)


def _local_fd(fh: IO[bytes]) -> int | None:
    """The descriptor of a local file (a remote store's file object has none)."""
    if not hasattr(os, "posix_fadvise"):
        return None
    try:
        return fh.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        return None


def _start_hashing(digest: Any, data: memoryview) -> threading.Thread | None:
    """Feed `data` to `digest`: inline for small buffers, else on a thread the caller joins."""
    if len(data) < _THREAD_MIN_BYTES:
        digest.update(data)
        return None
    thread = threading.Thread(target=digest.update, args=(data,), name="conveyor-npy-sha256", daemon=True)
    thread.start()
    return thread
