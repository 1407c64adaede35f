"""Writing an ndarray as `.npy` in one pass, hashing it as it goes.

`np.save` writes the same bytes, but the manifest then needs the file's SHA-256, which meant reading the file
back (a second pass over a 1 GiB array). Here the digest comes from the array's own memory, on a second thread
while the main one writes (hashlib and the write both release the GIL), and the data goes out as slices of the
array's buffer: no intermediate copy, unlike `np.save` to a file object, which copies 16 MiB chunks.

Two ways to write a large array to a local file, chosen by whoever saves it (`writing(...)`), both so that the write
needs no fresh memory of the array's size for the file's page cache. Touching fresh memory costs ~0.3 s per GiB
on bare metal and, on a virtual machine whose host has taken the memory back, over 3 s:
- `Writing.PAST_THE_CACHE`: each chunk is written back to disk and dropped from the page cache, so the same few
  pages serve the whole write. Used where the array itself goes on in memory (execution/handover.py) and nobody
  reads the file soon. The write-back runs a few chunks behind the writing (`_WriteBehind`), so the disk and the
  copy into the kernel overlap.
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
from collections import deque
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
    behind = _WriteBehind(fd, fh.tell()) if fd is not None and how is Writing.PAST_THE_CACHE else None
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
            if behind is not None:
                fh.flush()
                behind.written(fh.tell())
            elif release:
                if hasher is not None:
                    hasher.wait(number)  # the digest has read it too
                _give_back(flat.ctypes.data + start, len(chunk))
        if behind is not None:
            behind.finish()
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


class _WriteBehind:
    """Writes a file back to disk a few chunks behind its writer and drops what is written back from the page cache
    (`Writing.PAST_THE_CACHE`). Each chunk's write-back is started as soon as it is written and waited for only
    `DEPTH` chunks later, so the disk works while the next chunks are copied into the kernel: ~0.6 s per GiB here
    where a flush per chunk took ~0.9 s. sync_file_range, not fdatasync: the pages only need to be clean to be
    dropped, and it sends no cache flush to the device each time (durability is not what this is for). Where libc
    has no sync_file_range, or the file refuses it, each chunk is flushed with fdatasync instead."""

    DEPTH = 4
    _WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4  # SYNC_FILE_RANGE_* in <fcntl.h>

    def __init__(self, fd: int, start: int) -> None:
        import ctypes

        self._fd = fd
        self._start = self._end = start  # the file's offset where the array's bytes (header first) begin; written to
        self._pending: deque[tuple[int, int]] = deque()
        self._sync = getattr(_libc(), "sync_file_range", None)
        if self._sync is not None:
            self._sync.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            self._sync.restype = ctypes.c_int

    def written(self, end: int) -> None:
        """The file holds the bytes up to offset `end` (flushed into the kernel): start their write-back."""
        piece, self._end = (self._end, end - self._end), end
        if self._sync is not None and self._sync(self._fd, *piece, self._WRITE) == 0:
            self._pending.append(piece)
            if len(self._pending) > self.DEPTH:
                self._drop(*self._pending.popleft())
            return
        self._sync = None  # refused (or absent): flush what is written, and each chunk from here on, in full
        self._pending.clear()
        os.fdatasync(self._fd)
        os.posix_fadvise(self._fd, self._start, end - self._start, os.POSIX_FADV_DONTNEED)

    def finish(self) -> None:
        """Wait for the rest of the write-back and drop it, with any partial page left at a piece's edge."""
        while self._pending:
            self._drop(*self._pending.popleft())
        os.posix_fadvise(self._fd, self._start, self._end - self._start, os.POSIX_FADV_DONTNEED)

    def _drop(self, offset: int, length: int) -> None:
        if self._sync is not None and self._sync(self._fd, offset, length,
                                                 self._WAIT_BEFORE | self._WRITE | self._WAIT_AFTER) != 0:
            self._sync = None
        if self._sync is None:
            os.fdatasync(self._fd)
        os.posix_fadvise(self._fd, offset, length, os.POSIX_FADV_DONTNEED)  # clean now: the kernel drops them


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
