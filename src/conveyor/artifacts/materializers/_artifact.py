"""Saving and loading whole artifacts: atomic directories plus a checksummed manifest."""

from __future__ import annotations

import errno
import json
import warnings
from typing import Any

from conveyor.artifacts.materializers._base import (
    ArtifactCorruptedError,
    ArtifactMeta,
    BaseMaterializer,
    CannotMaterialize,
    import_path,
    load_import_path,
)
from conveyor.artifacts.materializers._builtin import CloudpickleMaterializer, fallback_hint
from conveyor.artifacts.materializers._registry import materializer_for
from conveyor.artifacts.store import ArtifactStore, ArtifactStoreError

__all__ = ["MANIFEST_NAME", "check_artifact", "load_artifact", "save_artifact"]

MANIFEST_NAME = ".conveyor-artifact.json"
_FORMAT = 1
_MISSING_ERRNOS = (errno.ENOENT, errno.ENOTDIR)


def save_artifact(value: Any, uri: str, store: ArtifactStore, data_type: Any = None) -> ArtifactMeta:
    """Materialize ``value`` at ``uri``; nothing appears there unless every file was written."""
    uri = store._resolve(uri).rstrip("/")
    materializer = materializer_for(data_type, value)
    if materializer is CloudpickleMaterializer:
        _warn_fallback(value, fallback_hint(value))
        return _write(CloudpickleMaterializer, value, uri, store)
    try:
        return _write(materializer, value, uri, store)
    except CannotMaterialize as exc:
        _warn_fallback(value, f"{materializer.__qualname__} could not store this value: {exc}")
        return _write(CloudpickleMaterializer, value, uri, store)


def load_artifact(
    uri: str,
    store: ArtifactStore,
    materializer: str | None = None,
    data_type: str | None = None,
    *,
    verify: bool = True,
    checksum: str | None = None,
    label: str | None = None,
) -> Any:
    """Check the artifact against its manifest, then load it; the arguments default to the manifest's.

    ``checksum`` is the one the metadata store recorded when the artifact was saved: the manifest alone cannot
    tell that a folder was swapped with another artifact's, since each folder matches its own manifest.
    ``label`` names the artifact in errors (e.g. ``input 'model'``).
    """
    uri = store._resolve(uri).rstrip("/")
    manifest = _read_manifest(uri, store)
    if verify:
        _verify(uri, store, manifest)
    if checksum:
        _check_recorded(uri, manifest, checksum, label)
    materializer_cls = _materializer_class(materializer or manifest["materializer"], uri)
    loaded_type = _data_type(data_type or manifest["data_type"], materializer_cls, uri)
    return materializer_cls(uri, store).load(loaded_type)


def check_artifact(uri: str, store: ArtifactStore, checksum: str | None = None, label: str | None = None) -> None:
    """Raise unless the artifact at ``uri`` exists, every file matches its manifest and, given ``checksum``, it is
    the artifact the metadata store recorded there (loads nothing; reads only the files whose stamp does not show
    them untouched since they were written, see ``_verify``)."""
    uri = store._resolve(uri).rstrip("/")
    manifest = _read_manifest(uri, store)
    _verify(uri, store, manifest)
    if checksum:
        _check_recorded(uri, manifest, checksum, label)


# -- saving ---------------------------------------------------------------------


def _write(materializer: type[BaseMaterializer], value: Any, uri: str, store: ArtifactStore) -> ArtifactMeta:
    with store.atomic_dir(uri) as tmp:
        instance = materializer(tmp, store)
        instance.save(value)
        hashed: dict[str, tuple[int, str]] = getattr(instance, "digests", None) or {}  # built-ins hash as they write
        entries = {rel: _file_entry(store, full, hashed.get(rel)) for rel, full in store._files(tmp)
                   if rel != MANIFEST_NAME}
        files = {rel: (entry["size"], entry["sha256"]) for rel, entry in entries.items()}
        meta = ArtifactMeta(
            materializer=import_path(materializer),
            data_type=import_path(type(value)),
            size=sum(size for size, _ in files.values()),
            checksum=_combined_checksum(files),
        )
        manifest = {"format": _FORMAT, **meta._asdict(), "files": entries}
        with store.open(f"{tmp}/{MANIFEST_NAME}", "wb") as fh:
            fh.write(json.dumps(manifest, separators=(",", ":")).encode("utf-8"))
    return meta


def _file_entry(store: ArtifactStore, full: str, hashed: tuple[int, str] | None) -> dict[str, Any]:
    """The manifest's entry for one file: size and SHA-256, and on local disk the stamp that lets a load trust
    the file without reading it (`ArtifactStore._stamp_written`). A digest the materializer computed while
    writing is used when the file on disk has its size; otherwise the file is read once."""
    stamp = store._stamp_written(full)
    if hashed is None or (stamp is not None and stamp[0] != hashed[0]):
        hashed = store._digest(full)
    entry: dict[str, Any] = {"size": hashed[0], "sha256": hashed[1]}
    if stamp is not None:
        entry["stamp"] = stamp
    return entry


def _combined_checksum(files: dict[str, tuple[int, str]]) -> str:
    import hashlib

    lines = "".join(f"{rel}\0{sha}\n" for rel, (_, sha) in sorted(files.items()))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def _warn_fallback(value: Any, hint: str) -> None:
    kind = type(value)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    reason = f" ({hint})" if hint else ""
    warnings.warn(
        f"No materializer for type '{name}'{reason}; falling back to cloudpickle, which ties the artifact to "
        "this Python and library version. Register one with conveyor.artifacts.register_materializer.",
        UserWarning,
        stacklevel=4,
    )


# -- loading --------------------------------------------------------------------


def _read_manifest(uri: str, store: ArtifactStore) -> dict[str, Any]:
    try:
        raw = store.read_bytes(f"{uri}/{MANIFEST_NAME}")
    except ArtifactStoreError as exc:
        if exc.errno not in _MISSING_ERRNOS:
            raise
        raise ArtifactStoreError(
            f"no artifact at {uri}: it was never written, was deleted, or the step producing it failed "
            "before finishing; re-run the producing step",
            uri=uri,
            errno=errno.ENOENT,
        ) from exc
    try:
        manifest = json.loads(raw)
        manifest["files"].items()
        return dict(manifest)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArtifactCorruptedError(
            f"artifact at {uri} is corrupted or truncated: its {MANIFEST_NAME} is unreadable ({exc}); "
            "re-run the producing step"
        ) from exc


def _verify(uri: str, store: ArtifactStore, manifest: dict[str, Any]) -> None:
    """Every file is read and hashed, except one whose stamp shows nothing changed it since it was hashed."""
    for rel, expected in manifest["files"].items():
        full = f"{uri}/{rel}"
        if _untouched(store, full, expected):
            continue
        problem = _file_problem(store, full, expected)
        if problem:
            raise ArtifactCorruptedError(
                f"artifact at {uri} is corrupted or truncated: file {rel} {problem}; re-run the producing step"
            )


def _untouched(store: ArtifactStore, full: str, expected: Any) -> bool:
    stamp = expected.get("stamp") if isinstance(expected, dict) else None
    return (isinstance(stamp, list) and len(stamp) == 4 and stamp[0] == expected.get("size")
            and store._unchanged(full, stamp))


def _check_recorded(uri: str, manifest: dict[str, Any], expected: str, label: str | None) -> None:
    try:
        actual = _combined_checksum({rel: (e["size"], e["sha256"]) for rel, e in manifest["files"].items()})
    except (KeyError, TypeError) as exc:
        raise ArtifactCorruptedError(
            f"artifact at {uri} is corrupted: its {MANIFEST_NAME} lists files without size or sha256 ({exc}); "
            "re-run the producing step"
        ) from exc
    if actual != expected:
        raise ArtifactCorruptedError(
            f"{label or 'artifact'} at {uri} is not the artifact recorded there: its content checksum is "
            f"{actual[:16]}..., the metadata store recorded {expected[:16]}... (the folder was replaced, moved or "
            "swapped with another artifact's); put the original folder back, or re-run the step that produced it"
        )


def _file_problem(store: ArtifactStore, full: str, expected: dict[str, Any]) -> str:
    try:
        size, sha = store._digest(full)
    except ArtifactStoreError as exc:
        if exc.errno in _MISSING_ERRNOS:
            return f"expected {expected['size']} bytes, but it is missing"
        raise
    if size != expected["size"]:
        return f"expected {expected['size']} bytes, got {size}"
    if sha != expected["sha256"]:
        return f"expected sha256 {expected['sha256']}, got {sha}"
    return ""


def _materializer_class(path: str, uri: str) -> type[BaseMaterializer]:
    try:
        cls = load_import_path(path)
    except ImportError as exc:
        raise ImportError(
            f"artifact at {uri} needs materializer {path}, which cannot be imported here ({exc}); "
            "install the package that defines it in this environment"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, BaseMaterializer)):
        raise TypeError(f"artifact at {uri} names {path} as its materializer, which is not a BaseMaterializer subclass")
    return cls


def _data_type(path: str, materializer: type[BaseMaterializer], uri: str) -> Any:
    try:
        return load_import_path(path)
    except ImportError as exc:
        if issubclass(materializer, CloudpickleMaterializer):
            return object  # the pickle restores its own type (by value for __main__ and local classes)
        raise ImportError(
            f"artifact at {uri} holds a {path}, which cannot be imported here ({exc}); "
            "install or expose the module that defines it"
        ) from exc
