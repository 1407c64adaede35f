"""The `gcp` container registry: Artifact Registry (REGION-docker.pkg.dev/PROJECT/REPO), google-auth's token."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.container_registries.base import BaseContainerRegistryFlavor

if TYPE_CHECKING:
    from conveyor.container_registries.gcp.registry import GCPContainerRegistry

__all__ = ["GCPContainerRegistryFlavor"]


class GCPContainerRegistryFlavor(BaseContainerRegistryFlavor):
    """Google Artifact Registry: an OAuth access token of the default credentials, user `oauth2accesstoken`."""

    name = "gcp"

    @property
    def implementation_class(self) -> type["GCPContainerRegistry"]:
        from conveyor.container_registries.gcp.registry import GCPContainerRegistry

        return GCPContainerRegistry
