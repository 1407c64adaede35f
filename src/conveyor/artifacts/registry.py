"""Artifacts by name and version: `save_artifact`, `load_artifact`, and the index that serves them everywhere.

An output named by `Annotated[T, "name"]` is the artifact `name`; any other output is `{pipeline}::{step}::{output}`
(ZenML's naming). Each time the launcher records one it gets the next version, "1", "2", ... (one the step asked
for with `save_artifact(..., version=...)` is kept if free). Whoever records a version also writes a small index
entry into the artifact store, `artifact_index/names/<name>/<version>.json` and `artifact_index/ids/<id>.json`
(on local disk one file under both names, a hard link), so a step on a step operator, which has no metadata
store, can still load an artifact by name. Light: no pydantic, no SQLAlchemy (the remote side imports it).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping
from urllib.parse import quote

from conveyor.exceptions import ConveyorError

if TYPE_CHECKING:
    from conveyor.artifacts.store import ArtifactStore

__all__ = ["INDEX_DIR", "ArtifactNotFoundError", "IndexEntry", "SavedArtifactVersion", "check_artifact_name",
           "check_version", "default_artifact_name", "index_entries", "read_index",
           "read_index_by_id", "write_index"]

INDEX_DIR = "artifact_index"
MAX_ARTIFACT_NAME = 256


class ArtifactNotFoundError(ConveyorError, KeyError):
    """No artifact of that name, version or id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class IndexEntry:
    """One recorded artifact version, as the artifact store's index keeps it."""

    id: str
    name: str
    version: str
    uri: str
    materializer: str
    data_type: str
    checksum: str | None
    created: float

    def load(self, store: "ArtifactStore") -> Any:
        from conveyor.artifacts.materializers import load_artifact as load_at

        return load_at(self.uri, store, self.materializer, self.data_type, checksum=self.checksum,
                       label=f"artifact {self.name!r} version {self.version}")


@dataclass(frozen=True)
class SavedArtifactVersion:
    """What `save_artifact` returns inside a step: the version is known once the launcher records it (None until
    then, unless one was asked for)."""

    id: str
    name: str
    version: str | None
    uri: str


def default_artifact_name(pipeline: str, step: str, output: str) -> str:
    return f"{pipeline}::{step}::{output}"


def check_artifact_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or name in (".", ".."):
        raise ValueError(f"artifact name must be a non-empty string, got {name!r}")
    if len(name) > MAX_ARTIFACT_NAME or any(ch in name for ch in "\n\r\t\0"):
        raise ValueError(f"invalid artifact name {name[:60]!r}: at most {MAX_ARTIFACT_NAME} characters, no "
                         "newlines, tabs or NUL")
    return name


def check_version(version: object) -> str | None:
    """A version asked for: None (the next number), an int, or a name (`check_name` rules)."""
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, (int, str)):
        raise TypeError(f"artifact version must be an int or a string, got {version!r}")
    from conveyor.config.names import check_name

    return check_name("artifact version", str(version))


def _name_dir(store: "ArtifactStore", name: str) -> str:
    return store.join(INDEX_DIR, "names", quote(name, safe=""))


def write_index(store: "ArtifactStore", entry: IndexEntry) -> None:
    """One file with two names on local disk (the id's name is a hard link: a new file costs a filesystem far
    more than a new name); two copies where there are no links."""
    text = json.dumps(asdict(entry), sort_keys=True)
    by_name = f"{_name_dir(store, entry.name)}/{quote(entry.version, safe='')}.json"
    by_id = store.join(INDEX_DIR, "ids", f"{quote(entry.id, safe='')}.json")
    store.write_text(by_name, text)
    if not store.link(by_name, by_id):
        store.write_text(by_id, text)


def index_entries(store: "ArtifactStore", rows: Iterable[Mapping[str, Any]]) -> None:
    """Index recorded artifact rows (those with a name and a version)."""
    for row in rows:
        if row.get("name") and row.get("version") is not None:
            write_index(store, IndexEntry(row["id"], row["name"], str(row["version"]), row["uri"], row["materializer"],
                                          row["data_type"], row.get("checksum"), time.time()))


def remove_index(store: "ArtifactStore", rows: Iterable[Mapping[str, Any]]) -> None:
    """Forget deleted artifact rows, so that a step loading by name never finds a version whose files are gone."""
    for row in rows:
        targets = [store.join(INDEX_DIR, "ids", f"{quote(row['id'], safe='')}.json")]
        if row.get("name") and row.get("version") is not None:
            targets.append(f"{_name_dir(store, row['name'])}/{quote(str(row['version']), safe='')}.json")
        for uri in targets:
            if store.exists(uri):
                store.rm(uri)


def _read(store: "ArtifactStore", uri: str) -> IndexEntry | None:
    from conveyor.artifacts.store import ArtifactStoreError

    try:
        if not store.exists(uri):
            return None
        return IndexEntry(**json.loads(store.read_text(uri)))
    except (ValueError, TypeError) as err:
        raise ArtifactStoreError(f"artifact index entry {uri} is damaged ({err}): delete it and record that "
                                 "artifact again", uri=uri) from None


def read_index(store: "ArtifactStore", name: str, version: str | int | None = None) -> IndexEntry | None:
    """The entry of `name` at `version`, or its newest one."""
    directory = _name_dir(store, name)
    if version is not None:
        return _read(store, f"{directory}/{quote(str(version), safe='')}.json")
    if not store.exists(directory):
        return None
    entries = [e for uri in store.ls(directory) if uri.endswith(".json") and (e := _read(store, uri)) is not None]
    return max(entries, key=lambda e: (e.created, int(e.version) if e.version.isdigit() else -1), default=None)


def read_index_by_id(store: "ArtifactStore", artifact_id: str) -> IndexEntry | None:
    return _read(store, store.join(INDEX_DIR, "ids", f"{quote(artifact_id, safe='')}.json"))
