"""`BaseArtifactStoreConfig`: pydantic, so apart from `artifact_stores.base`, which a run imports without it."""

from __future__ import annotations

from typing import Any

from conveyor.stack.config_model import StackComponentConfig

__all__ = ["BaseArtifactStoreConfig"]


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
