"""The `azure` container registry: Azure Container Registry (NAME.azurecr.io), azure-identity's token exchanged."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.container_registries.base import BaseContainerRegistryFlavor

if TYPE_CHECKING:
    from conveyor.container_registries.azure.registry import AzureContainerRegistry

__all__ = ["AzureContainerRegistryFlavor"]


class AzureContainerRegistryFlavor(BaseContainerRegistryFlavor):
    """Azure Container Registry: an Entra ID token exchanged for a registry refresh token (or the admin user)."""

    name = "azure"

    @property
    def implementation_class(self) -> type["AzureContainerRegistry"]:
        from conveyor.container_registries.azure.registry import AzureContainerRegistry

        return AzureContainerRegistry
