"""Artifact store components: a named, configured root for `conveyor.artifacts.ArtifactStore`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from conveyor.stack.component import ComponentType, StackComponent
from conveyor.stack.flavor import Flavor

if TYPE_CHECKING:
    from conveyor.artifact_stores.base_config import BaseArtifactStoreConfig
    from conveyor.artifacts.store import ArtifactStore

__all__ = ["BaseArtifactStore", "BaseArtifactStoreConfig", "BaseArtifactStoreFlavor"]


class BaseArtifactStore(StackComponent):
    TYPE: ClassVar[ComponentType] = ComponentType.ARTIFACT_STORE

    @property
    def config(self) -> "BaseArtifactStoreConfig":
        return self._config  # type: ignore[return-value]

    def artifact_store(self) -> "ArtifactStore":
        from conveyor.artifacts.store import ArtifactStore

        return ArtifactStore(self.config.path, self.config.storage_options() or None)


class BaseArtifactStoreFlavor(Flavor):
    @property
    def type(self) -> ComponentType:
        return ComponentType.ARTIFACT_STORE

    @property
    def config_class(self) -> type["BaseArtifactStoreConfig"]:
        from conveyor.artifact_stores.base_config import BaseArtifactStoreConfig

        return BaseArtifactStoreConfig

    @property
    def implementation_class(self) -> type[BaseArtifactStore]:
        return BaseArtifactStore


def __getattr__(name: str) -> Any:
    """`BaseArtifactStoreConfig` (pydantic) loads only when asked for."""
    if name == "BaseArtifactStoreConfig":
        from conveyor.artifact_stores.base_config import BaseArtifactStoreConfig

        return BaseArtifactStoreConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
