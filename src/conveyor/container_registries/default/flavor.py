"""The `default` container registry: any OCI registry (Distribution, Harbor, GHCR, ...), basic credentials."""

from __future__ import annotations

from conveyor.container_registries.base import BaseContainerRegistryFlavor

__all__ = ["DefaultContainerRegistryFlavor"]


class DefaultContainerRegistryFlavor(BaseContainerRegistryFlavor):
    """Any OCI registry, anonymous or with a username and password (secret references)."""

    name = "default"
