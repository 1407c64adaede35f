"""Turning step outputs into files and back.

Built-ins cover JSON-able builtins, bytes, numpy, pandas and pydantic; anything
else falls back to cloudpickle with a warning. Register your own with
:func:`register_materializer`.
"""

from conveyor.artifacts.materializers._artifact import MANIFEST_NAME, check_artifact, load_artifact, save_artifact
from conveyor.artifacts.materializers._base import (
    ArtifactCorruptedError,
    ArtifactMeta,
    BaseMaterializer,
    CannotMaterialize,
    import_path,
    load_import_path,
)
from conveyor.artifacts.materializers._builtin import (
    BytesMaterializer,
    CloudpickleMaterializer,
    JSONMaterializer,
    NumpyMaterializer,
    PandasMaterializer,
    PydanticMaterializer,
)
from conveyor.artifacts.materializers._registry import materializer_for, register_materializer

__all__ = [
    "MANIFEST_NAME",
    "ArtifactCorruptedError",
    "ArtifactMeta",
    "BaseMaterializer",
    "BytesMaterializer",
    "CannotMaterialize",
    "CloudpickleMaterializer",
    "JSONMaterializer",
    "NumpyMaterializer",
    "PandasMaterializer",
    "PydanticMaterializer",
    "check_artifact",
    "import_path",
    "load_artifact",
    "load_import_path",
    "materializer_for",
    "register_materializer",
    "save_artifact",
]
