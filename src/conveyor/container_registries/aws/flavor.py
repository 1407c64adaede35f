"""The `aws` container registry: Amazon ECR, logged in with a token from ECR's `GetAuthorizationToken`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.container_registries.base import BaseContainerRegistryFlavor

if TYPE_CHECKING:
    from conveyor.container_registries.aws.registry import AWSContainerRegistry, AWSContainerRegistryConfig

__all__ = ["AWSContainerRegistryFlavor"]


class AWSContainerRegistryFlavor(BaseContainerRegistryFlavor):
    """Amazon ECR (ACCOUNT.dkr.ecr.REGION.amazonaws.com): a login token from boto3's default credentials."""

    name = "aws"

    @property
    def config_class(self) -> type["AWSContainerRegistryConfig"]:
        from conveyor.container_registries.aws.registry import AWSContainerRegistryConfig

        return AWSContainerRegistryConfig

    @property
    def implementation_class(self) -> type["AWSContainerRegistry"]:
        from conveyor.container_registries.aws.registry import AWSContainerRegistry

        return AWSContainerRegistry
