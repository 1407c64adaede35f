"""Artifact store components."""

from typing import TYPE_CHECKING, Any

from conveyor.artifact_stores.base import BaseArtifactStore, BaseArtifactStoreFlavor

if TYPE_CHECKING:
    from conveyor.artifact_stores.base_config import BaseArtifactStoreConfig

__all__ = ["BaseArtifactStore", "BaseArtifactStoreConfig", "BaseArtifactStoreFlavor"]


def __getattr__(name: str) -> Any:
    if name == "BaseArtifactStoreConfig":  # pydantic: only when asked for
        from conveyor.artifact_stores.base_config import BaseArtifactStoreConfig

        return BaseArtifactStoreConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
