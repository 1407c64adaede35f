"""Container registry components: where a container step's built image is pushed before the run, and pulled
from by the backend (`conveyor container-registry register NAME --flavor=default --uri=HOST[:PORT]/NAMESPACE`)."""

from conveyor.container_registries.base import BaseContainerRegistry, BaseContainerRegistryFlavor, RegistryLogin

__all__ = ["BaseContainerRegistry", "BaseContainerRegistryFlavor", "RegistryLogin"]
