"""ACR's login: azure-identity's `DefaultAzureCredential` token, exchanged at `https://HOST/oauth2/exchange` for a
refresh token that the registry takes as the password of the all-zero user. The admin user (username/password as
secret references) skips the exchange."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

from conveyor.container_registries.base import BaseContainerRegistry, RegistryLogin
from conveyor.exceptions import ConfigError

__all__ = ["AzureContainerRegistry", "TOKEN_USER", "exchange_token"]

TOKEN_USER = "00000000-0000-0000-0000-000000000000"
SCOPE = "https://management.azure.com/.default"


def exchange_token(host: str, access_token: str, *, insecure: bool = False, timeout: float = 30) -> str:
    """An ACR refresh token for an Entra ID access token (POST /oauth2/exchange)."""
    body = urllib.parse.urlencode({"grant_type": "access_token", "service": host.split(":")[0],
                                   "access_token": access_token}).encode()
    scheme = "http" if insecure else "https"
    request = urllib.request.Request(f"{scheme}://{host}/oauth2/exchange", data=body, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return str(json.loads(response.read())["refresh_token"])


class AzureContainerRegistry(BaseContainerRegistry):
    """Credentials: the admin user when given, else `DefaultAzureCredential` (environment, managed identity, CLI)."""

    def token_login(self) -> RegistryLogin:
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError:
            raise ConfigError("the azure container registry needs azure-identity: pip install 'conveyor[azure]'") from None
        token = DefaultAzureCredential().get_token(SCOPE).token
        return RegistryLogin(TOKEN_USER, exchange_token(self.host, token, insecure=self.insecure))
