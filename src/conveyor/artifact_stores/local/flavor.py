"""The `local` artifact store: a directory on this machine (or a shared filesystem mounted here)."""

from __future__ import annotations

import os

from pydantic import field_validator

from conveyor.artifact_stores.base import BaseArtifactStoreConfig, BaseArtifactStoreFlavor


class LocalArtifactStoreConfig(BaseArtifactStoreConfig):
    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if "://" in value:
            raise ValueError(f"the local artifact store takes a directory, not a URL ({value!r}); "
                             "use a remote artifact store flavor for URLs")
        return os.path.abspath(os.path.expanduser(value))


class LocalArtifactStoreFlavor(BaseArtifactStoreFlavor):
    """Stores artifacts in a local directory."""

    name = "local"

    @property
    def config_class(self) -> type[LocalArtifactStoreConfig]:
        return LocalArtifactStoreConfig
