"""The config every container registry flavor shares: its address, optional basic credentials, plain HTTP."""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, field_validator

from conveyor.stack.config_model import StackComponentConfig

__all__ = ["ContainerRegistryConfig"]

_URI = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[a-z0-9._/-]+)?$")


class ContainerRegistryConfig(StackComponentConfig):
    uri: str = Field(description=(
        "HOST[:PORT][/NAMESPACE], no scheme: images are pushed to <uri>/<repository>:<content hash>"))
    username: str | None = Field(default=None, description="registry user; give it as a secret reference, {{name.key}}")
    password: SecretStr | None = Field(default=None, description=(
        "registry password or token, as a secret reference ({{name.key}}): the value never enters the store"))
    insecure: bool = Field(default=False, description=(
        "plain HTTP without TLS verification: only for a registry on a trusted network (127.0.0.1)"))

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if "://" in value:
            raise ValueError(f"give the registry as HOST[:PORT][/NAMESPACE] without a scheme, got {value!r} "
                             "(for plain HTTP add --insecure=true)")
        if not _URI.match(value):
            raise ValueError(f"{value!r} is not HOST[:PORT][/NAMESPACE] (namespace: lower case letters, digits, "
                             "'.', '_', '-', '/')")
        return value
