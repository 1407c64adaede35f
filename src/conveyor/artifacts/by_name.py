"""`save_artifact` and `load_artifact`: artifacts by name and version, inside a step (any side) or outside one.

Above the Client: outside a step they record and read through it and return its views. The artifact-store index
they use inside a step is `conveyor.artifacts.registry`.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Mapping

from conveyor.artifacts.registry import (ArtifactNotFoundError, SavedArtifactVersion, check_artifact_name,
                                         check_version, index_entries, read_index, read_index_by_id)

if TYPE_CHECKING:
    from conveyor.client import ArtifactView

__all__ = ["load_artifact", "save_artifact"]


def save_artifact(data: Any, name: str, version: str | int | None = None, *,
                  user_metadata: Mapping[str, Any] | None = None, **_ignored: Any) -> "SavedArtifactVersion | ArtifactView":
    """Save `data` as a version of artifact `name` (ZenML's `save_artifact`).

    Inside a step (any side) it is written under the step's attempt directory and recorded with the step when it
    ends; outside one it is written to the active stack's artifact store and recorded at once. `version=` is
    taken if free, else an error (inside a step: when the step records it, failing the step). ZenML's `tags`,
    `extract_metadata`, `include_visualizations` are accepted and ignored.
    """
    name = check_artifact_name(name)
    asked = check_version(version)
    from conveyor.artifacts.materializers import save_artifact as save_at
    from conveyor.metadata import checked_values
    from conveyor.steps.context import MetadataRecord, SavedArtifact, current_step_context

    values = checked_values(user_metadata) if user_metadata else None
    artifact_id = uuid.uuid4().hex
    context = current_step_context()
    if context is not None:
        store = context.artifact_store
        if asked is not None and (read_index(store, name, asked) is not None
                                  or any(s.name == name and s.version == asked for s in context.record.saved)):
            raise ValueError(f"artifact {name!r} already has a version {asked!r}: save it without version= to get "
                             "the next number, or pick another version")
        uri = f"{context.attempt_uri}/saved/{artifact_id}"
        meta = save_at(data, uri, store)
        context.record.saved.append(SavedArtifact(artifact_id, name, asked, uri, meta.materializer, meta.data_type,
                                                  meta.checksum, meta.size))
        if values:
            context.record.metadata.append(MetadataRecord("artifact", values, artifact_id=artifact_id))
        return SavedArtifactVersion(artifact_id, name, asked, uri)
    from conveyor.client import Client

    client = Client()
    store = client.active_stack.artifact_store.artifact_store()
    uri = store.join("saved", artifact_id)
    meta = save_at(data, uri, store)
    row = client.store.register_artifact({"id": artifact_id, "uri": uri, "materializer": meta.materializer,
                                          "data_type": meta.data_type, "checksum": meta.checksum, "size": meta.size,
                                          "name": name, "version": asked}, values)
    index_entries(store, [row])
    return client.get_artifact_version(artifact_id)


def load_artifact(name_or_id: str, version: str | int | None = None) -> Any:
    """Load an artifact by name (the newest version, or `version`) or by id (ZenML's `load_artifact`).

    Inside a step (any side) it reads the artifact store's index, after what this step saved itself; outside a
    step it asks the metadata store. The content is checked against its recorded checksum either way.
    """
    from conveyor.steps.context import current_step_context

    context = current_step_context()
    if context is None:
        from conveyor.client import Client

        return Client().get_artifact_version(name_or_id, version).load()
    wanted = None if version is None else str(version)
    for saved in reversed(context.record.saved):  # this step's own saves, newest first
        if (saved.name == name_or_id and wanted in (None, saved.version)) or (saved.id == name_or_id and wanted is None):
            from conveyor.artifacts.materializers import load_artifact as load_at

            return load_at(saved.uri, context.artifact_store, saved.materializer, saved.data_type,
                           checksum=saved.checksum, label=f"artifact {saved.name!r}")
    store = context.artifact_store
    entry = read_index(store, name_or_id, version)
    if entry is None and version is None:
        entry = read_index_by_id(store, name_or_id)
    if entry is None:
        which = f"version {version} of artifact {name_or_id!r}" if version is not None else f"artifact {name_or_id!r}"
        raise ArtifactNotFoundError(f"no {which} in the artifact store at {store.root}: see `conveyor artifact list`")
    return entry.load(store)
