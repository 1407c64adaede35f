"""`LocalArtifactStoreConfig`, the pydantic model of the `local` artifact store's config; the rule for its path is
`flavor.local_path`, which the run path applies without pydantic."""

from __future__ import annotations

from pydantic import field_validator

from conveyor.artifact_stores.base_config import BaseArtifactStoreConfig
from conveyor.artifact_stores.local.flavor import local_path

__all__ = ["LocalArtifactStoreConfig"]


class LocalArtifactStoreConfig(BaseArtifactStoreConfig):
    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return local_path(value)
