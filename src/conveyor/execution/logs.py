"""One home for a step's stored log: every writer appends through `StepLog`, every reader uses `read_log`,
`LogTail` or `follow`.

The stored log of an attempt is `<attempt>/logs.txt` (`artifacts.layout.AttemptLayout.logs`). On a local artifact store it is one file,
appended to as text arrives, so other processes see every line at once. A remote store (S3, GCS, `memory://`)
has no append: while the step runs, what arrived since the last write is stored as the next numbered chunk,
`<attempt>/logs/000001.txt`, `000002.txt`, ... (at most once per LIVE_LOG_FLUSH_S, or at once on
`write_now`, the step's `info.force_write_logs()`), so each byte is uploaded once while running instead of the
whole log again every second. At close the whole log is written to `logs.txt` once and the chunks removed: a
finished log is one object to read. Readers take the chunks while there are any, else `logs.txt`.

Secret values are redacted before anything is stored (`StreamRedactor`), so a value split across two appends,
and so across two chunks, is still caught. Imported by the remote side of a step: standard library and
`conveyor.artifacts.store` only (no pydantic, no SQLAlchemy).
"""

from __future__ import annotations

import codecs
import os
import posixpath
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from conveyor.artifacts.store import ArtifactStore

__all__ = ["LIVE_LOG_FLUSH_S", "LOG_NAME", "LogTail", "StepLog", "chunk_dir", "follow",
           "process_log_path", "read_log", "stored_log_uris"]

#: the stored log's file name in the attempt folder (as `AttemptLayout.logs` names it)
LOG_NAME = "logs.txt"
#: how often a log held for a remote artifact store (no append) is stored as a new chunk while the step runs
LIVE_LOG_FLUSH_S = 1.0
#: how often `follow` looks for new output
FOLLOW_POLL_S = 0.2


def chunk_dir(uri: str) -> str:
    """Where the chunks of a log being written to a remote store live: `.../logs.txt` -> `.../logs`."""
    base, ext = posixpath.splitext(uri)
    return base if ext else f"{uri}.chunks"


def stored_log_uris(uri: str) -> list[str]:
    """Everything a log may occupy in the store (the file, and chunks an ended writer left), for deletion."""
    return [uri, chunk_dir(uri)]


def process_log_path(attempt_uri: str, job_name: str) -> str:
    """The file a step's own process writes its output to (the `local` and `spark` flavors): the stored log
    itself on a local store; on a remote one a private file on this host whose content the launcher stores
    (it streams the file through `logs()`)."""
    from conveyor.utils.private import private_makedirs

    if "://" in attempt_uri or not attempt_uri:
        folder = os.path.join(tempfile.gettempdir(), "conveyor-steps", job_name)
    else:
        folder = attempt_uri
    private_makedirs(folder)
    return os.path.join(folder, LOG_NAME)


class _ForceWriter(Protocol):
    """`info.force_write_logs` (step_operators.info.LogWriter), not imported: it pulls in the config layer."""

    def bind(self, write: Callable[[], None] | None) -> None: ...


# -- writing --------------------------------------------------------------------------------------------
class _Storage(Protocol):
    def write(self, text: str) -> None: ...
    def write_now(self) -> None: ...
    def close(self) -> None: ...


class _Nowhere:
    """Nothing stored (the operator stores the log itself): the log is only redacted and echoed."""

    def write(self, text: str) -> None:
        pass

    def write_now(self) -> None:
        pass

    def close(self) -> None:
        pass


class _AppendFile:
    """A local store: every piece is appended to `logs.txt` and flushed, so readers see it at once."""

    def __init__(self, store: ArtifactStore, uri: str) -> None:
        self._store, self._uri = store, uri
        self._fh: IO[bytes] = store.open(uri, "ab")

    def write(self, text: str) -> None:
        try:
            self._fh.write(text.encode("utf-8"))
            self._fh.flush()
        except OSError as exc:  # a full disk: the store's failure, named with the log, not the step's
            raise self._store.error_for("write", self._uri, exc) from exc

    def write_now(self) -> None:
        pass  # every write is flushed already

    def close(self) -> None:
        try:
            self._fh.close()
        except OSError as exc:
            raise self._store.error_for("write", self._uri, exc) from exc


class _Chunks:
    """A remote store: what arrived since the last write becomes the next chunk, at most once per
    LIVE_LOG_FLUSH_S; close() stores the whole log once as `logs.txt` and removes the chunks."""

    def __init__(self, store: ArtifactStore, uri: str) -> None:
        self._store, self._uri, self._dir = store, uri, chunk_dir(uri)
        self._pending: list[str] = []  # not in a chunk yet
        self._whole: list[str] = []  # everything, for logs.txt at close
        self._next = 1
        self._timer: threading.Timer | None = None
        self._last = 0.0
        self._closed = False
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one chunk at a time, in order
        # chunks an earlier writer of this attempt left (an orchestrator that died; this one re-attached and
        # reads the job's output again): the log starts over, as the file would be rewritten
        _remove(store, self._dir)

    def write(self, text: str) -> None:
        with self._lock:
            self._pending.append(text)
            self._whole.append(text)
            if self._timer is None and not self._closed:
                wait = max(0.0, LIVE_LOG_FLUSH_S - (time.monotonic() - self._last))
                self._timer = threading.Timer(wait, self._flush)
                self._timer.daemon = True
                self._timer.start()

    def _flush(self) -> None:
        with self._flushing:
            with self._lock:
                self._timer = None
                if self._closed:
                    return
                text, self._pending = "".join(self._pending), []
                self._last = time.monotonic()
            if not text:
                return
            try:
                self._store.write_text(f"{self._dir}/{self._next:06d}.txt", text)
                self._next += 1
            except Exception:  # noqa: BLE001 - best effort while running: kept for the next chunk, and close()
                with self._lock:
                    self._pending.insert(0, text)

    def write_now(self) -> None:
        with self._lock:
            if self._closed:
                return
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._flush()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
        with self._flushing, self._lock:
            if self._whole:
                self._store.write_text(self._uri, "".join(self._whole))
            if self._next > 1:
                try:
                    _remove(self._store, self._dir)
                except Exception:  # noqa: BLE001, S110 - readers take the chunks, which hold the same text
                    pass


def _remove(store: ArtifactStore, uri: str) -> None:
    if store.exists(uri):
        store.rm(uri, recursive=True)


class StepLog:
    """One attempt's log as it is written: `append` each piece as it comes (any thread), `close` at the end.

    `uri` None stores nothing (an operator that stores the log itself): the stream is still redacted and
    echoed. `secrets` gives the values to redact, asked on every append (values resolved later count from
    then on). `echo` gets each complete line (and the unfinished last one at close), for the live display.
    `force_write` (the step's `info.force_write_logs`) is bound to `write_now` until close.
    """

    def __init__(self, store: ArtifactStore | None, uri: str | None, *,
                 secrets: Callable[[], Iterable[str]] | None = None, echo: Callable[[str], None] | None = None,
                 force_write: _ForceWriter | None = None) -> None:
        from conveyor.secrets.stream_redaction import StreamRedactor

        self._storage: _Storage
        if store is None or uri is None:
            self._storage = _Nowhere()
        elif store.is_local:
            self._storage = _AppendFile(store, uri)
        else:
            self._storage = _Chunks(store, uri)
        self._redactor = StreamRedactor(secrets) if secrets is not None else None
        self._echo = echo
        self._partial = ""
        self._lock = threading.Lock()
        self._force_write = force_write
        if force_write is not None:
            force_write.bind(self.write_now)

    def append(self, text: str) -> None:
        with self._lock:
            lines = self._store(self._redactor.feed(text) if self._redactor is not None else text)
        self._show(lines)

    def write_now(self) -> None:
        """Store what is held now rather than at the next periodic write (`info.force_write_logs()`)."""
        self._storage.write_now()

    def close(self) -> None:
        """Store what is still held (the redactor's tail, the last chunk) and end the log."""
        if self._force_write is not None:
            self._force_write.bind(None)
        with self._lock:
            lines = self._store(self._redactor.finish()) if self._redactor is not None else []
            if self._partial:
                lines.append(self._partial)
                self._partial = ""
        self._show(lines)
        self._storage.close()

    def _store(self, text: str) -> list[str]:
        """Under the lock: store `text`; the complete lines it ends, for the echo."""
        if text:
            self._storage.write(text)
        if self._echo is None:
            return []
        *lines, self._partial = (self._partial + text).split("\n")
        return lines

    def _show(self, lines: list[str]) -> None:
        if self._echo is not None:
            for line in lines:
                self._echo(line)


# -- reading --------------------------------------------------------------------------------------------
def _chunks(store: ArtifactStore, uri: str) -> list[tuple[int, str]]:
    """The chunks of a log still being written (or left by a writer that ended without closing), in order."""
    folder = chunk_dir(uri)
    if not store.exists(folder):
        return []
    found = []
    for child in store.ls(folder):
        name = child.rstrip("/").replace(os.sep, "/").rsplit("/", 1)[-1]
        number, _, ext = name.partition(".")
        if number.isdigit() and ext == "txt":
            found.append((int(number), child))
    return sorted(found)


def read_log(store: ArtifactStore, uri: str | None) -> str:
    """The stored log ('' when there is none yet): its chunks while there are any, else the file."""
    if not uri:
        return ""
    tail = LogTail(store)
    tail.switch(uri)
    return tail.read()


class LogTail:
    """Reads what was appended to a stored log since the last read, on a local or a remote store."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self.uri: str | None = None
        self._restart()

    def _restart(self) -> None:
        self.offset = 0  # bytes of the log read so far: the same place in the chunks and in the closed file
        self._next_chunk = 1
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def switch(self, uri: str | None) -> bool:
        """Follow another log (a retry writes a new one); False when it is the one followed already."""
        if uri == self.uri:
            return False
        self.uri = uri
        self._restart()
        return True

    def read(self) -> str:
        from conveyor.artifacts.store import ArtifactStoreError

        if not self.uri:
            return ""
        # another process may be writing this log: what this process's s3fs listed before is stale
        self.store.refresh(chunk_dir(self.uri))
        self.store.refresh(self.uri)
        chunks = _chunks(self.store, self.uri)
        data = b""
        for number, chunk in chunks:
            if number < self._next_chunk:
                continue
            if number != self._next_chunk:
                break  # not in order: the rest next time
            try:
                piece = self.store.read_bytes(chunk)
            except ArtifactStoreError:
                chunks = []  # the writer closed the log meanwhile and removed its chunks: the file has the rest
                break
            data += piece
            self.offset += len(piece)
            self._next_chunk += 1
        if not chunks and self.store.exists(self.uri):  # the file: a local log, or a closed remote one
            with self.store.open(self.uri, "rb") as fh:
                fh.seek(self.offset)
                rest = fh.read()
            data += rest
            self.offset += len(rest)
        return self._decoder.decode(data)


def follow(store: ArtifactStore, uri: str, finished: Callable[[], bool],
           poll_s: float = FOLLOW_POLL_S) -> Iterator[str]:
    """Yield the log's text as it is stored, until `finished()` (the step has ended) and all of it is read."""
    tail = LogTail(store)
    tail.switch(uri)
    while True:
        done = finished()  # asked before the read: what was written before it ended is read after
        text = tail.read()
        if text:
            yield text
        if done:
            return
        time.sleep(poll_s)
