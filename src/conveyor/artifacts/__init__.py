"""Artifact storage: an fsspec-backed store and the materializers that fill it.

Importing this package stays cheap (no numpy/pandas/pyarrow/cloudpickle/fsspec);
those load only when a value or a remote store needs them.
"""

from conveyor.artifacts.materializers import (
    MANIFEST_NAME,
    ArtifactCorruptedError,
    ArtifactMeta,
    BaseMaterializer,
    CannotMaterialize,
    import_path,
    load_artifact,
    load_import_path,
    materializer_for,
    register_materializer,
    save_artifact,
)
from conveyor.artifacts.store import ArtifactStore, ArtifactStoreError

__all__ = [
    "MANIFEST_NAME",
    "ArtifactCorruptedError",
    "ArtifactMeta",
    "ArtifactStore",
    "ArtifactStoreError",
    "BaseMaterializer",
    "CannotMaterialize",
    "import_path",
    "load_artifact",
    "load_import_path",
    "materializer_for",
    "register_materializer",
    "save_artifact",
]
