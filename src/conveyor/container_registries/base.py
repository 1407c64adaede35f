"""The container registry component: a `HOST[:PORT]/NAMESPACE` and how to log in to it.

A flavor supplies only the login (`login()`): the default one takes a username and password (secret references),
the cloud ones exchange the cloud's own credentials for a registry token. Pushing and the manifest check live in
`conveyor.images.registry_api`, which needs nothing but the address and the login.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from conveyor.stack.component import ComponentType, StackComponent
from conveyor.stack.flavor import Flavor

if TYPE_CHECKING:
    from conveyor.container_registries.config import ContainerRegistryConfig

__all__ = ["BaseContainerRegistry", "BaseContainerRegistryFlavor", "RegistryLogin", "split_uri"]


@dataclass(frozen=True)
class RegistryLogin:
    """Basic credentials for the registry's HTTP API (and the engine's push); never printed."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"RegistryLogin(username={self.username!r}, password=***)"


def split_uri(uri: str) -> tuple[str, str]:
    """`HOST[:PORT][/NAMESPACE]` -> (host[:port], namespace or "")."""
    host, _, namespace = uri.strip().rstrip("/").partition("/")
    return host, namespace


class BaseContainerRegistry(StackComponent):
    """A registry images are pushed to in pre-flight and pulled from by the step's backend."""

    TYPE: ClassVar[ComponentType] = ComponentType.CONTAINER_REGISTRY

    @property
    def config(self) -> "ContainerRegistryConfig":
        return self._config  # type: ignore[return-value]

    @property
    def uri(self) -> str:
        return str(self.config_value("uri")).rstrip("/")

    @property
    def host(self) -> str:
        return split_uri(self.uri)[0]

    @property
    def namespace(self) -> str:
        return split_uri(self.uri)[1]

    @property
    def insecure(self) -> bool:
        """Plain HTTP, no TLS verification (a local registry on 127.0.0.1)."""
        return bool(self.config_value("insecure"))

    def repository(self, name: str) -> str:
        """`<uri>/<name>`: where an image of repository `name` (its last path part) is pushed."""
        return f"{self.uri}/{name.rsplit('/', 1)[-1]}"

    def login(self) -> RegistryLogin | None:
        """The credentials for this registry: the configured username and password when given, else what
        `token_login` fetches."""
        username, password = self.config_value("username"), self.config_value("password")
        secret = password.get_secret_value() if hasattr(password, "get_secret_value") else password
        if username and secret:
            return RegistryLogin(str(username), str(secret))
        return self.token_login()

    def token_login(self) -> RegistryLogin | None:
        """Credentials from the cloud's own identity (the cloud flavors); None: an anonymous registry."""
        return None


class BaseContainerRegistryFlavor(Flavor):
    @property
    def type(self) -> ComponentType:
        return ComponentType.CONTAINER_REGISTRY

    @property
    def config_class(self) -> type["ContainerRegistryConfig"]:
        from conveyor.container_registries.config import ContainerRegistryConfig

        return ContainerRegistryConfig

    @property
    def implementation_class(self) -> type[BaseContainerRegistry]:
        return BaseContainerRegistry


