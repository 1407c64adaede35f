"""Where artifacts live: a directory tree on local disk or behind an fsspec URL.

Local stores go straight to ``os``/``open`` because per-call fsspec overhead
dominates small artifacts; fsspec is imported only for remote stores (or when
someone asks for ``.fs``). On local disk, what the store creates is private to
the user: directories 0700, files it writes 0600 (logs and job specs may quote
a step's data).
"""

from __future__ import annotations

import errno as _errno
import os
import posixpath
import re
import shutil
import stat
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import IO, Any
from urllib.parse import urlsplit

from conveyor.exceptions import ConveyorError
from conveyor.utils.private import DIR_MODE, private_makedirs, private_opener

__all__ = ["ArtifactStore", "ArtifactStoreError"]

_UPDATE_HINT = "conveyor artifact-store update <name> --path=<writable path>"
_LOCAL_SCHEMES = ("file://", "local://")
_NETWORK_ERRNOS = frozenset(
    getattr(_errno, name)
    for name in ("ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "EHOSTDOWN", "ENETDOWN")
    if hasattr(_errno, name)
)
_QUOTA_ERRNOS = frozenset(getattr(_errno, n) for n in ("ENOSPC", "EDQUOT") if hasattr(_errno, n))
#: what os.link raises where a filesystem has no hard links, or none across these two paths
_NO_LINK_ERRNOS = frozenset(getattr(_errno, n) for n in ("EPERM", "EXDEV", "EMLINK", "ENOTSUP", "EOPNOTSUPP", "ENOSYS")
                            if hasattr(_errno, n))
# Backends whose fsspec implementation ships in a Conveyor extra.
_EXTRA_FOR_PROTOCOL = {
    "s3": "aws", "s3a": "aws", "gs": "gcp", "gcs": "gcp", "abfs": "azure", "abfss": "azure", "az": "azure", "adl": "azure",
}


class ArtifactStoreError(ConveyorError):
    """The store could not be read or written; the message says what to change."""

    def __init__(self, message: str, *, uri: str | None = None, errno: int | None = None) -> None:
        super().__init__(message)
        self.uri = uri
        self.errno = errno

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only attributes would be lost by the default exception pickling,
        # and step errors cross process boundaries.
        return (_rebuild_error, (type(self), str(self), self.uri, self.errno))


def _rebuild_error(cls: type[ArtifactStoreError], message: str, uri: str | None, errno: int | None) -> ArtifactStoreError:
    return cls(message, uri=uri, errno=errno)


def _random_suffix() -> str:
    return os.urandom(6).hex()


#: what _sibling names a temporary: `.NAME.tmp-` or `.NAME.old-` and the 12 hex digits of _random_suffix
_TEMPORARY = re.compile(r"^\..+\.(?:tmp|old)-[0-9a-f]{12}$")


class ArtifactStore:
    """A root directory for artifacts; local paths by default, any fsspec URL otherwise.

    URIs passed to the methods are what :meth:`join` returns; a relative URI is
    taken relative to ``root``. Instances pickle as ``(root, storage_options)``
    so they can be shipped to step operators without a live connection.
    """

    def __init__(self, root: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> None:
        text = os.fspath(root)
        if not text:
            raise ArtifactStoreError("artifact store root is empty: give a directory path or a URL such as s3://bucket/prefix")
        self.storage_options: dict[str, Any] = dict(storage_options or {})
        self.is_local: bool = _is_local(text)
        self.root: str = _normalize_local(text) if self.is_local else _strip_trailing_slash(text)
        self._fs: Any = None

    # -- identity ---------------------------------------------------------------

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.root, self.storage_options))

    def __repr__(self) -> str:
        return f"ArtifactStore({self.root!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ArtifactStore):
            return NotImplemented
        return (self.root, self.storage_options) == (other.root, other.storage_options)

    def __hash__(self) -> int:
        return hash(self.root)

    @property
    def fs(self) -> Any:
        """The fsspec filesystem, created on first use so that pickling and local use stay cheap."""
        if self._fs is None:
            self._fs = self._make_fs()
        return self._fs

    def _make_fs(self) -> Any:
        if self.is_local:
            from fsspec.implementations.local import LocalFileSystem

            return LocalFileSystem()
        import fsspec.core

        protocol = self.root.split("://", 1)[0]
        try:
            return fsspec.core.url_to_fs(self.root, **self.storage_options)[0]
        except ImportError as exc:
            extra = _EXTRA_FOR_PROTOCOL.get(protocol)
            fix = f"pip install 'conveyor[{extra}]'" if extra else f"install the fsspec backend for {protocol}://"
            raise ArtifactStoreError(
                f"artifact store at {self.root} needs a filesystem package that is not installed ({exc}): {fix}",
                uri=self.root,
            ) from exc
        except ValueError as exc:
            raise ArtifactStoreError(
                f"artifact store at {self.root} uses an unknown protocol {protocol!r} ({exc}): "
                f"use a local path or a URL fsspec understands (s3://, gs://, abfs://, ...) "
                f"({_UPDATE_HINT})",
                uri=self.root,
            ) from exc

    # -- paths ------------------------------------------------------------------

    def join(self, *parts: str) -> str:
        """Build a URI under the root; separators inside parts are kept, stray ones dropped."""
        cleaned = [p.strip("/") for p in parts]
        tail = "/".join(p for p in cleaned if p)
        if not tail:
            return self.root
        sep = "" if self.root.endswith("/") else "/"
        return f"{self.root}{sep}{tail}"

    def local_path(self, uri: str) -> str | None:
        """The OS path behind ``uri``, so callers can memory-map or hand it to native code."""
        return self._resolve(uri) if self.is_local else None

    def _resolve(self, uri: str, write: str | None = None) -> str:
        """The path behind ``uri``. With ``write`` (the operation, for the message), it must lie below the root:
        a `..` or `/` that slipped into a name must never write or delete outside the store. A read is refused
        only when a path built under the root climbs out of it; artifacts of an earlier store stay readable."""
        path = self._raw_path(uri)
        inside = self._inside(path)
        if inside is False or (write is not None and not inside):
            raise self._outside(write or "read", uri, path)
        return path

    def _raw_path(self, uri: str) -> str:
        if self.is_local:
            if uri.startswith("/"):
                return uri
            for scheme in _LOCAL_SCHEMES:
                if uri.startswith(scheme):
                    return _normalize_local(uri)
            return os.path.join(self.root, uri)
        if "://" in uri or "::" in uri:
            return uri
        return self.join(uri)

    def _inside(self, path: str) -> bool | None:
        """True below the root, False for a path written under the root that climbs out of it (`..`), None for a
        path elsewhere."""
        sep = os.sep if self.is_local else "/"
        prefix = self.root if self.root.endswith(sep) else self.root + sep
        if not path.startswith(prefix):
            return None
        if self.is_local:
            normal = os.path.normpath(path)
            return None if normal == self.root else normal.startswith(prefix)  # the root itself: not below it
        tail = path[len(prefix):].strip("/")
        return None if not tail else not any(part in (".", "..") for part in tail.split("/"))

    def _outside(self, op: str, uri: str, path: str) -> ArtifactStoreError:
        from conveyor.config.names import NAME_RULES

        shown = os.path.normpath(path) if self.is_local else path
        return ArtifactStoreError(
            f"refusing to {op} {uri!r}: it resolves to {shown}, outside the artifact store at {self.root}. Paths "
            f"in the store are built from step, output and run names, which may not hold '/' or '..' ({NAME_RULES})",
            uri=path)

    # -- queries ----------------------------------------------------------------

    def exists(self, uri: str) -> bool:
        path = self._resolve(uri)
        if self.is_local:
            return os.path.exists(path)
        try:
            return bool(self.fs.exists(path))
        except Exception as exc:  # noqa: BLE001 - _error lets through what is not a storage failure
            raise self._error("check", path, exc) from exc

    def refresh(self, uri: str) -> None:
        """Forget what this process's filesystem cached of `uri`'s folder: another process writes it (a log being
        written by an orchestrator elsewhere), and s3fs/gcsfs/adlfs keep listings until told. Local paths cache
        nothing. The listing cache is keyed by paths without the protocol, and adlfs (unlike s3fs) does not strip
        it from what it is given: a `az://` path would leave the listing in place and a reader waiting forever."""
        if self.is_local:
            return
        path = self.fs._strip_protocol(self._resolve(uri)).rstrip("/")
        invalidate = getattr(self.fs, "invalidate_cache", None)
        if invalidate is not None:
            invalidate(path)
            invalidate(posixpath.dirname(path))

    def ls(self, uri: str) -> list[str]:
        """Sorted URIs of the direct children, in the same form as ``uri``."""
        path = self._resolve(uri)
        base = path.rstrip("/")
        try:
            if self.is_local:
                names = os.listdir(path)
            else:
                names = [posixpath.basename(p.rstrip("/")) for p in self.fs.ls(path, detail=False)]
        except Exception as exc:  # noqa: BLE001 - _error lets through what is not a storage failure
            raise self._error("list", path, exc) from exc
        sep = os.sep if self.is_local else "/"
        return sorted(f"{base}{sep}{name}" for name in names)

    # -- reads ------------------------------------------------------------------

    def read_bytes(self, uri: str) -> bytes:
        path = self._resolve(uri)
        try:
            if self.is_local:
                with open(path, "rb") as fh:
                    return fh.read()
            return bytes(self.fs.cat_file(path))
        except Exception as exc:  # noqa: BLE001 - _error lets through what is not a storage failure
            raise self._error("read", path, exc) from exc

    def read_text(self, uri: str) -> str:
        return self.read_bytes(uri).decode("utf-8")

    def open(self, uri: str, mode: str = "rb") -> IO[Any]:
        """Open a file; writes through this are NOT atomic (use write_bytes or atomic_dir for that)."""
        path = self._resolve(uri, "write" if _is_write_mode(mode) else None)
        try:
            if not self.is_local:
                return self.fs.open(path, mode)  # type: ignore[no-any-return]
            try:
                return open(path, mode, opener=private_opener)
            except FileNotFoundError:
                if not _is_write_mode(mode):
                    raise
                private_makedirs(os.path.dirname(path))
                return open(path, mode, opener=private_opener)
        except Exception as exc:  # noqa: BLE001 - _error lets through what is not a storage failure
            raise self._error("open", path, exc) from exc

    # -- writes -----------------------------------------------------------------

    def makedirs(self, uri: str) -> None:
        path = self._raw_path(uri) if uri in ("", self.root) else self._resolve(uri, "create directory")
        try:
            if self.is_local:
                private_makedirs(path)
            else:
                self.fs.makedirs(path, exist_ok=True)
        except Exception as exc:  # noqa: BLE001 - _error lets through what is not a storage failure
            raise self._error("create directory", path, exc) from exc

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write so that readers see the old content or the new, never a torn file."""
        path = self._resolve(uri, "write")
        tmp = _sibling(path, "tmp", self.is_local)
        try:
            if self.is_local:
                self._write_local_atomic(path, tmp, data)
            else:
                self.fs.pipe_file(tmp, data)
                self.fs.mv(tmp, path)
        except Exception as exc:  # noqa: BLE001 - _error lets through what is not a storage failure
            self._discard(tmp)
            raise self._error("write", path, exc) from exc

    def write_text(self, uri: str, text: str) -> None:
        self.write_bytes(uri, text.encode("utf-8"))

    def write_private(self, uri: str, data: bytes) -> None:
        """Like write_bytes, readable by this user only (0600 from the start) on a local store; on a remote store
        the bucket's own permissions apply."""
        if not self.is_local:
            self.write_bytes(uri, data)
            return
        path = self._resolve(uri, "write")
        tmp = _sibling(path, "tmp", True)
        try:
            private_makedirs(os.path.dirname(path))
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            self._discard(tmp)
            raise self._error("write", path, exc) from exc

    def link(self, source: str, uri: str) -> bool:
        """Give the file at `source` a second name, `uri` (replacing what is there), without writing it again:
        a hard link, where creating a file costs far more than adding a name. False, having changed nothing,
        where there are no links (remote stores, filesystems that refuse them): the caller writes a copy."""
        if not self.is_local:
            return False
        src, path = self._resolve(source), self._resolve(uri, "write")
        try:
            try:
                os.link(src, path)
            except FileNotFoundError:
                if not os.path.exists(src):
                    raise
                private_makedirs(os.path.dirname(path))
                os.link(src, path)
            return True
        except FileExistsError:
            pass
        except OSError as exc:
            if exc.errno in _NO_LINK_ERRNOS:
                return False
            raise self._error("write", path, exc) from exc
        tmp = _sibling(path, "tmp", True)
        try:
            os.link(src, tmp)
            os.replace(tmp, path)
        except OSError as exc:
            self._discard(tmp)
            raise self._error("write", path, exc) from exc
        return True

    def _write_local_atomic(self, path: str, tmp: str, data: bytes) -> None:
        try:
            fh = open(tmp, "wb", opener=private_opener)
        except FileNotFoundError:
            private_makedirs(os.path.dirname(path))
            fh = open(tmp, "wb", opener=private_opener)
        with fh:
            fh.write(data)
        os.replace(tmp, path)

    def rm(self, uri: str, recursive: bool = False) -> None:
        path = self._resolve(uri, "remove")
        try:
            if not self.is_local:
                self.fs.rm(path, recursive=recursive)
            elif not os.path.isdir(path) or os.path.islink(path):
                os.remove(path)
            elif recursive:
                shutil.rmtree(path)
            else:
                os.rmdir(path)
        except Exception as exc:  # noqa: BLE001 - _error lets through what is not a storage failure
            raise self._error("remove", path, exc) from exc

    @contextmanager
    def atomic_dir(self, uri: str) -> Iterator[str]:
        """Yield a hidden sibling directory to fill; it replaces ``uri`` only if the block succeeds.

        Readers therefore never see a half-written directory on local disk. On
        object stores there is no directory rename, so files are moved one by
        one with dot-files last: a marker dot-file written inside then acts as
        the commit record.
        """
        path = self._resolve(uri, "write").rstrip("/")
        tmp = _sibling(path, "tmp", self.is_local)
        self._make_tmp_dir(path, tmp)
        try:
            yield tmp
            self._commit_dir(tmp, path)
        except BaseException as exc:
            self._discard(tmp, recursive=True)
            if isinstance(exc, OSError):
                raise self._error("write", exc.filename or path, exc) from exc
            raise

    def _make_tmp_dir(self, path: str, tmp: str) -> None:
        try:
            if not self.is_local:
                self.fs.makedirs(tmp, exist_ok=True)
                return
            try:
                os.mkdir(tmp, DIR_MODE)
            except FileNotFoundError:
                private_makedirs(os.path.dirname(tmp))
                os.mkdir(tmp, DIR_MODE)
        except Exception as exc:  # noqa: BLE001 - _error lets through what is not a storage failure
            raise self._error("create directory", exc.filename or path, exc) from exc

    def _commit_dir(self, tmp: str, path: str) -> None:
        if self.is_local:
            _replace_dir_local(tmp, path)
            return
        fs = self.fs
        if fs.exists(path):
            fs.rm(path, recursive=True)
        prefix = fs._strip_protocol(tmp).rstrip("/") + "/"
        sources = [p for p in fs.find(tmp) if p.startswith(prefix)]
        sources.sort(key=lambda p: (posixpath.basename(p).startswith("."), p))
        for src in sources:
            fs.mv(src, f"{path}/{src[len(prefix):]}")
        if not sources:
            fs.makedirs(path, exist_ok=True)
        self._discard(tmp, recursive=True)

    def _discard(self, path: str, recursive: bool = False) -> None:
        """Best-effort cleanup on a failure path, where a second error would hide the first."""
        try:
            if not self.is_local:
                if self.fs.exists(path):
                    self.fs.rm(path, recursive=recursive)
            elif recursive:
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
        except OSError:
            pass

    def remove_temporaries(self, uri: str, *, keep: Collection[str] = ()) -> list[str]:
        """Remove the hidden temporaries (`.NAME.tmp-*`, `.NAME.old-*`) that writers killed mid-write left below
        ``uri``, except below the directories in ``keep`` (a job still writing there). Best effort: returns what
        was removed, and skips what cannot be."""
        base = self._resolve(uri, "clean").rstrip("/")
        kept = {self._raw_path(k).rstrip("/") for k in keep}
        removed: list[str] = []
        if self.is_local:
            kept = {os.path.normpath(k) for k in kept}
            for top, dirs, files in os.walk(base):
                if os.path.normpath(top) in kept:
                    dirs[:] = []
                    continue
                for name in [*dirs, *files]:
                    if _TEMPORARY.match(name):
                        path = os.path.join(top, name)
                        _remove_quietly(path)
                        if not os.path.lexists(path):
                            removed.append(path)
                dirs[:] = [d for d in dirs if not _TEMPORARY.match(d)]
            return removed
        try:
            files = self.fs.find(base)
        except Exception:  # noqa: BLE001 - nothing there, or unreachable: nothing to clean
            return removed
        prefix = self.fs._strip_protocol(base).rstrip("/") + "/"
        tops: set[str] = set()
        for found in files:
            if not found.startswith(prefix) or any(found.startswith(self.fs._strip_protocol(k) + "/") for k in kept):
                continue
            parts = found[len(prefix):].split("/")
            hit = next((i for i, part in enumerate(parts) if _TEMPORARY.match(part)), None)
            if hit is not None:
                tops.add(f"{base}/{'/'.join(parts[:hit + 1])}")
        for top in sorted(tops):
            try:
                self.fs.rm(top, recursive=True)
                removed.append(top)
            except Exception:  # noqa: BLE001 - best effort
                pass
        return removed

    # -- internal helpers used by the materializers -------------------------------

    def _files(self, uri: str) -> list[tuple[str, str]]:
        """(relative posix path, full uri) of every file below ``uri``, sorted."""
        path = self._resolve(uri).rstrip("/")
        try:
            if self.is_local:
                return sorted(_walk_local(path, ""))
            fs = self.fs
            prefix = fs._strip_protocol(path).rstrip("/") + "/"
            rels = [p[len(prefix):] for p in fs.find(path) if p.startswith(prefix)]
            return sorted((rel, f"{path}/{rel}") for rel in rels)
        except Exception as exc:  # noqa: BLE001 - _error lets through what is not a storage failure
            raise self._error("list", path, exc) from exc

    def _digest(self, uri: str) -> tuple[int, str]:
        """(size, sha256 hex) from a single read of the file."""
        import hashlib

        path = self._resolve(uri)
        try:
            with (open(path, "rb") if self.is_local else self.fs.open(path, "rb")) as fh:
                digest = hashlib.sha256()
                size = 0
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
                return size, digest.hexdigest()
        except Exception as exc:  # noqa: BLE001 - _error lets through what is not a storage failure
            raise self._error("read", path, exc) from exc

    def _stamp_written(self, uri: str) -> list[int] | None:
        """Stamp a file just written, so that a later `_unchanged` can vouch for it without reading it again:
        [size, mtime_ns, ctime_ns, inode]. None where there is no such stamp: remote stores, a symlink, or a
        filesystem that keeps timestamps coarser than a nanosecond.

        The file's mtime is set 1 ns back. A later write sets mtime to the current time, which the kernel takes
        from a clock that moves in ticks of milliseconds: a write in the same tick as ours would leave the mtime
        we saw unchanged, but can never produce the value 1 ns before it. Setting the mtime back (`touch -r`)
        changes the ctime, which no call can set; a copy or a replacement has another inode.
        """
        if not self.is_local:
            return None
        path = self._resolve(uri)
        try:
            written = os.lstat(path)
            if not stat.S_ISREG(written.st_mode):
                return None
            os.utime(path, ns=(written.st_atime_ns, written.st_mtime_ns - 1))
            stamped = os.lstat(path)
        except OSError:
            return None
        if stamped.st_mtime_ns != written.st_mtime_ns - 1:  # rounded off: this filesystem cannot tell
            return None
        return _stamp_of(stamped)

    def _unchanged(self, uri: str, stamp: Any) -> bool:
        """Whether the file still has the stamp `_stamp_written` gave it (False when it cannot tell)."""
        if not self.is_local:
            return False
        try:
            now = os.lstat(self._resolve(uri))
        except OSError:
            return False
        return stat.S_ISREG(now.st_mode) and _stamp_of(now) == stamp

    # -- errors -----------------------------------------------------------------

    def check_usable(self) -> None:
        """One cheap probe before a run starts, so a read-only or unreachable store fails it up front."""
        if self.is_local:
            probe = os.path.join(self.root, f".probe-{_random_suffix()}")
            try:
                private_makedirs(self.root)
                with open(probe, "wb") as fh:
                    fh.write(b"ok")
                os.remove(probe)
            except OSError as exc:
                _remove_quietly(probe)
                raise self._error("write", probe, exc) from exc
            return
        self._probe_endpoint()
        try:
            self.fs.info(self.root)
        except FileNotFoundError:
            pass  # reachable; nothing written there yet
        except Exception as exc:  # noqa: BLE001 - _error lets through what is not a storage failure
            raise self._error("reach", self.root, exc) from exc

    def _probe_endpoint(self) -> None:
        """A configured endpoint (an emulator, MinIO, Azurite) that takes no connection fails the run at once:
        the SDKs retry a refused connection with backoff for half a minute (gcsfs) or more (azure-core)."""
        endpoint = _endpoint_of(self.storage_options)
        parts = urlsplit(endpoint) if endpoint else None
        if parts is None or not parts.hostname:
            return
        import socket

        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=10).close()
        except OSError as exc:
            raise self._error("reach", self.root, exc) from exc

    def error_for(self, op: str, uri: str, exc: OSError) -> ArtifactStoreError:
        """The store's error for an OSError met while doing `op` on `uri` outside these methods (a log file)."""
        return self._error(op, self._raw_path(uri), exc)

    def _error(self, op: str, path: str, exc: BaseException) -> ArtifactStoreError:
        os_exc = _as_os_error(exc)
        if os_exc is None:
            raise exc  # not a storage failure (a bug, a bad value): let it through unchanged
        exc = os_exc
        code = _errno_of(exc)
        endpoint = _endpoint_of(self.storage_options)
        where = f"{self.root} (endpoint {endpoint})" if endpoint else self.root
        return ArtifactStoreError(_explain(op, path, where, exc, code), uri=path, errno=code)


def _endpoint_of(options: dict[str, Any]) -> str | None:
    """The server a remote store's options name, if any: s3fs's and gcsfs's endpoint_url, adlfs's BlobEndpoint."""
    client = options.get("client_kwargs") or {}
    endpoint = options.get("endpoint_url") or client.get("endpoint_url")
    if not endpoint and isinstance(options.get("connection_string"), str):
        fields = dict(p.split("=", 1) for p in options["connection_string"].split(";") if "=" in p)
        endpoint = fields.get("BlobEndpoint")
    return str(endpoint) if endpoint else None


_ERRNO_BY_CLASS: tuple[tuple[type[OSError], int], ...] = (
    (FileNotFoundError, _errno.ENOENT),
    (PermissionError, _errno.EACCES),
    (NotADirectoryError, _errno.ENOTDIR),
    (IsADirectoryError, _errno.EISDIR),
    (FileExistsError, _errno.EEXIST),
    (TimeoutError, _errno.ETIMEDOUT),
    (ConnectionError, _errno.ECONNREFUSED),
)


#: remote SDKs' connection failures that are not OSErrors (botocore's EndpointConnectionError and friends)
_CONNECTION_ERROR_NAMES = frozenset({"EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError",
                                     "ReadTimeoutError", "ProxyConnectionError", "ClientConnectorError",
                                     "ServiceRequestError"})  # azure-core's (adlfs): the request was never answered


def _as_os_error(exc: BaseException) -> OSError | None:
    if isinstance(exc, OSError):
        return exc
    names = {k.__name__ for k in type(exc).__mro__}
    if names & _CONNECTION_ERROR_NAMES:
        timeout = "Timeout" in type(exc).__name__
        return (TimeoutError if timeout else ConnectionError)(
            _errno.ETIMEDOUT if timeout else _errno.ECONNREFUSED, str(exc))
    return None


def _errno_of(exc: OSError) -> int | None:
    """The errno, inferred from the class when a remote backend raised a bare OSError subclass."""
    if exc.errno is not None:
        return exc.errno
    for cls, code in _ERRNO_BY_CLASS:
        if isinstance(exc, cls):
            return code
    return None


def _explain(op: str, path: str, root: str, exc: OSError, code: int | None) -> str:
    """Turn an OSError into a sentence that says what to change."""
    detail = exc.strerror or str(exc) or type(exc).__name__
    elsewhere = f"point the artifact store at a writable path ({_UPDATE_HINT})"
    if code == _errno.EROFS:
        return f"artifact store at {root} is read-only (could not {op} {path}): {elsewhere}"
    if code in _QUOTA_ERRNOS:
        return f"artifact store at {root} is out of space or quota (could not {op} {path}): free space there or {elsewhere}"
    if code in (_errno.EACCES, _errno.EPERM):
        return (
            f"permission denied to {op} {path} in the artifact store at {root}: give this user (uid {_uid()}) "
            f"access to it, check the store's credentials, or {elsewhere}"
        )
    if code == _errno.ENOTDIR:
        return (
            f"could not {op} {path}: a parent of it is a regular file, not a directory; "
            f"remove or rename that file, or {elsewhere}"
        )
    if code == _errno.EEXIST and op == "create directory":
        return f"could not create directory {path}: it exists and is not a directory; remove it or {elsewhere}"
    if code == _errno.ENOTEMPTY:
        return f"could not {op} {path}: the directory is not empty; pass recursive=True to remove it with its contents"
    if code == _errno.ENOENT:
        return f"could not {op} {path}: no such file or directory in the artifact store at {root} ({detail})"
    if code == _errno.ENAMETOOLONG:
        return f"could not {op} {path}: the path is too long; use a shorter artifact store root or shorter step/output names"
    if code in _NETWORK_ERRNOS:
        return (
            f"artifact store at {root} is unreachable (could not {op} {path}: {detail}): "
            f"check the network and the store's credentials/storage_options, or {elsewhere}"
        )
    if code == _errno.EIO:
        return f"I/O error while trying to {op} {path} in the artifact store at {root} ({detail}): check the disk or mount"
    return f"could not {op} {path} in the artifact store at {root} ({detail}): check that it is reachable and writable, or {elsewhere}"


def _uid() -> str:
    getuid = getattr(os, "getuid", None)
    return str(getuid()) if getuid else "?"


def _is_local(root: str) -> bool:
    return "://" not in root or root.startswith(_LOCAL_SCHEMES)


def _normalize_local(root: str) -> str:
    for scheme in _LOCAL_SCHEMES:
        if root.startswith(scheme):
            root = root[len(scheme):]
            break
    return os.path.abspath(os.path.expanduser(root))


def _strip_trailing_slash(url: str) -> str:
    stripped = url.rstrip("/")
    # Keep "memory://" (a bare protocol root) intact.
    return url if stripped.endswith(":") else stripped


def _is_write_mode(mode: str) -> bool:
    return any(c in mode for c in "wax+")


def _sibling(path: str, kind: str, local: bool) -> str:
    """A hidden name next to ``path``, so a rename stays on the same filesystem."""
    head, _, name = path.rpartition(os.sep if local else "/")
    return f"{head}{os.sep if local else '/'}.{name}.{kind}-{_random_suffix()}"


def _replace_dir_local(tmp: str, path: str) -> None:
    """Rename ``tmp`` onto ``path``, moving an existing ``path`` aside first.

    Retries because a concurrent writer of the same artifact can slip its own
    directory in between; the last writer wins.
    """
    for _ in range(8):
        try:
            os.replace(tmp, path)
            return
        except OSError as exc:
            if exc.errno not in (_errno.ENOTEMPTY, _errno.EEXIST, _errno.ENOTDIR, _errno.EISDIR):
                raise
        old = _sibling(path, "old", local=True)
        try:
            os.replace(path, old)
        except FileNotFoundError:
            continue
        try:
            os.replace(tmp, path)
        except OSError:
            _restore(old, path)
            raise
        _remove_quietly(old)
        return
    os.replace(tmp, path)


def _restore(old: str, path: str) -> None:
    try:
        os.replace(old, path)
    except OSError:
        pass


def _remove_quietly(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except OSError:
            pass


def _stamp_of(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _walk_local(root: str, rel: str) -> Iterator[tuple[str, str]]:
    with os.scandir(root) as entries:
        for entry in entries:
            name = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_dir(follow_symlinks=False):
                yield from _walk_local(entry.path, name)
            else:
                yield name, entry.path
