"""Artifact store components: a named, configured root for `conveyor.artifacts.ArtifactStore`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from conveyor.stack.component import ComponentType, StackComponent, StackComponentConfig
from conveyor.stack.flavor import Flavor

if TYPE_CHECKING:
    from conveyor.artifacts.store import ArtifactStore


class BaseArtifactStoreConfig(StackComponentConfig):
    path: str

    def storage_options(self) -> dict[str, Any]:
        """fsspec options for this process, credentials included."""
        return {}

    def remote_options(self) -> dict[str, Any]:
        """fsspec options the remote side reads from the job spec: never credentials."""
        return self.storage_options()

    def remote_environment(self) -> dict[str, str]:
        """Environment variables (credentials) the remote side needs to reach the store."""
        return {}


class BaseArtifactStore(StackComponent):
    TYPE: ClassVar[ComponentType] = ComponentType.ARTIFACT_STORE

    @property
    def config(self) -> BaseArtifactStoreConfig:
        return self._config  # type: ignore[return-value]

    def artifact_store(self) -> "ArtifactStore":
        from conveyor.artifacts.store import ArtifactStore

        return ArtifactStore(self.config.path, self.config.storage_options() or None)


class BaseArtifactStoreFlavor(Flavor):
    @property
    def type(self) -> ComponentType:
        return ComponentType.ARTIFACT_STORE

    @property
    def config_class(self) -> type[BaseArtifactStoreConfig]:
        return BaseArtifactStoreConfig

    @property
    def implementation_class(self) -> type[BaseArtifactStore]:
        return BaseArtifactStore
