"""`LocalArtifactStore`: a directory takes no fsspec options, so its path is all a run needs of its config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.artifact_stores.base import BaseArtifactStore

if TYPE_CHECKING:
    from conveyor.artifacts.store import ArtifactStore

__all__ = ["LocalArtifactStore"]


class LocalArtifactStore(BaseArtifactStore):
    def artifact_store(self) -> "ArtifactStore":
        """From the path as stored when the flavor vouched for it, without building the pydantic config."""
        from conveyor.artifacts.store import ArtifactStore

        return ArtifactStore(self.config_value("path"))
