"""Artifact store components."""

from conveyor.artifact_stores.base import BaseArtifactStore, BaseArtifactStoreConfig, BaseArtifactStoreFlavor

__all__ = ["BaseArtifactStore", "BaseArtifactStoreConfig", "BaseArtifactStoreFlavor"]
