"""Writing an ndarray as `.npy` in one pass, hashing it as it goes.

`np.save` writes the same bytes, but the manifest then needs the file's SHA-256, which meant reading the file
back (a second pass over a 1 GiB array). Here the digest comes from the array's own memory, on a second thread
while the main one writes (hashlib and the write both release the GIL), and the data goes out as slices of the
array's buffer: no intermediate copy, unlike `np.save` to a file object, which copies 16 MiB chunks.

Two ways to write a large array to a local file, chosen by whoever saves it (`writing(...)`), both so that the write
needs no fresh memory of the array's size for the file's page cache. Touching fresh memory costs ~0.3 s per GiB
on bare metal and, on a virtual machine whose host has taken the memory back, over 3 s:
- `Writing.PAST_THE_CACHE`: each chunk is flushed to disk and dropped from the page cache, so the same few pages
  serve the whole write. Used where the array itself goes on in memory (execution/handover.py) and nobody reads
  the file soon.
- `Writing.RELEASING`: each chunk's pages of the array are given back to the kernel (`madvise(MADV_DONTNEED)`)
  once it is written and hashed, so the file's page cache reuses them. Used where nothing else references the
  array and it is dropped after it is saved (a step process's output, say): the array reads as zeros afterwards.
  This halves the memory a save needs at its peak, and the next step still finds the file in the page cache.
"""

from __future__ import annotations

import enum
import hashlib
import io
import mmap
import os
import queue
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from typing import IO, Any

__all__ = ["RELEASE_MIN_BYTES", "Writing", "can_release", "owns_large_buffer", "write_npy", "writing"]

#: below this the digest runs inline: starting a thread costs more than it saves
_THREAD_MIN_BYTES = 8 << 20
#: one write call per slice: a remote store's file buffers what it is given (np.save hands it 16 MiB at a time
#: too), and 64 calls per GiB cost nothing on local disk
_CHUNK = 16 << 20
#: smaller arrays are written plainly: their page cache costs next to nothing
RELEASE_MIN_BYTES = 64 << 20


class Writing(enum.Enum):
    PLAIN = "plain"
    PAST_THE_CACHE = "past the page cache"
    RELEASING = "releasing the array as written"


_WRITING: ContextVar[Writing] = ContextVar("conveyor_npy_writing", default=Writing.PLAIN)


@contextmanager
def writing(how: Writing) -> Iterator[None]:
    """Arrays written meanwhile to a local file are written `how` (see the module's docstring)."""
    token = _WRITING.set(how)
    try:
        yield
    finally:
        _WRITING.reset(token)


def owns_large_buffer(value: Any, min_bytes: int) -> bool:
    """A plain ndarray (no subclass, no view) that owns its memory, of at least `min_bytes`: what may be given
    away whole, to the kernel here or to a reader (execution/handover.py), once nothing else references it."""
    np = sys.modules.get("numpy")
    return (np is not None and type(value) is np.ndarray and value.base is None and value.flags.owndata
            and value.nbytes >= min_bytes)


def can_release(value: Any) -> bool:
    """A large array whose pages may be given back as they are written (the caller makes sure nothing else
    references it)."""
    return sys.platform.startswith("linux") and owns_large_buffer(value, RELEASE_MIN_BYTES)


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
    how = _WRITING.get()
    # only a local file: its write() has copied the bytes into the kernel when it returns, where another file
    # object might keep the slice to send later
    fd = _local_fd(fh) if how is not Writing.PLAIN else None
    release = fd is not None and how is Writing.RELEASING and can_release(array)
    digest = hashlib.sha256(head)
    hasher = _ChunkHasher(digest) if len(data) >= _THREAD_MIN_BYTES else None
    try:
        fh.write(head)
        for number, start in enumerate(range(0, len(data), _CHUNK), 1):
            chunk = data[start:start + _CHUNK]
            if hasher is not None:
                hasher.feed(chunk)
            else:
                digest.update(chunk)
            fh.write(chunk)
            if fd is not None and how is Writing.PAST_THE_CACHE:
                fh.flush()
                os.fdatasync(fd)  # written back: now the pages can be dropped (dirty ones would stay)
                os.posix_fadvise(fd, 0, len(head) + start + len(chunk), os.POSIX_FADV_DONTNEED)
            elif release:
                if hasher is not None:
                    hasher.wait(number)  # the digest has read it too
                _give_back(flat.ctypes.data + start, len(chunk))
    finally:
        if hasher is not None:
            hasher.close()
    return len(head) + len(data), digest.hexdigest()


class _ChunkHasher:
    """Feeds chunks to a digest on a second thread, in order; `wait(n)` returns once the first n are in it."""

    def __init__(self, digest: Any) -> None:
        self._digest = digest
        self._chunks: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self._done = 0
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="conveyor-npy-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            self._digest.update(chunk)
            with self._cond:
                self._done += 1
                self._cond.notify_all()

    def feed(self, chunk: memoryview) -> None:
        self._chunks.put(chunk)

    def wait(self, count: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._done >= count)

    def close(self) -> None:
        """After every chunk fed is hashed (also when the write failed: the thread ends either way)."""
        self._chunks.put(None)
        self._thread.join()


_PAGE = mmap.PAGESIZE


def _give_back(address: int, length: int) -> None:
    """MADV_DONTNEED the whole pages inside [address, address + length): the kernel takes them back at once."""
    lo = -(-address // _PAGE) * _PAGE
    hi = (address + length) // _PAGE * _PAGE
    if hi > lo:
        _libc().madvise(lo, hi - lo, mmap.MADV_DONTNEED)


@cache
def _libc() -> Any:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise.restype = ctypes.c_int
    return libc


def _local_fd(fh: IO[bytes]) -> int | None:
    """The descriptor of a local file (a remote store's file object has none)."""
    if not hasattr(os, "posix_fadvise"):
        return None
    try:
        return fh.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        return None
