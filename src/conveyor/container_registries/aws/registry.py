"""ECR's login: `GetAuthorizationToken` returns base64 `AWS:<password>`, valid 12 hours (boto3, imported here)."""

from __future__ import annotations

import base64
import re

from pydantic import Field

from conveyor.container_registries.base import BaseContainerRegistry, RegistryLogin
from conveyor.container_registries.config import ContainerRegistryConfig
from conveyor.exceptions import ConfigError

__all__ = ["AWSContainerRegistry", "AWSContainerRegistryConfig", "ecr_region"]

_ECR_HOST = re.compile(r"^\d{12}\.dkr\.ecr(-fips)?\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


def ecr_region(host: str) -> str | None:
    """The region of an ECR host name, None for another host."""
    match = _ECR_HOST.match(host.split(":")[0])
    return match.group(2) if match else None


class AWSContainerRegistryConfig(ContainerRegistryConfig):
    region: str | None = Field(default=None, description="AWS region; default: read from the ECR host name")
    endpoint_url: str | None = Field(default=None, description="ECR API endpoint (tests, VPC endpoints)")


class AWSContainerRegistry(BaseContainerRegistry):
    """Credentials from boto3's default chain (environment, profile, instance role) unless username/password set."""

    @property
    def config(self) -> AWSContainerRegistryConfig:
        return self._config  # type: ignore[return-value]

    def token_login(self) -> RegistryLogin:
        try:
            import boto3
        except ImportError:
            raise ConfigError("the aws container registry needs boto3: pip install 'conveyor[aws]'") from None
        region = self.config.region or ecr_region(self.host)
        if region is None:
            raise ConfigError(f"container registry {self.name!r}: cannot tell the AWS region from {self.host!r}: "
                              f"`conveyor container-registry update {self.name} --region=REGION`")
        client = boto3.client("ecr", region_name=region, endpoint_url=self.config.endpoint_url)
        data = client.get_authorization_token()["authorizationData"][0]
        username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        return RegistryLogin(username, password)
