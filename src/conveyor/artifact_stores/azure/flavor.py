"""The `azure` artifact store: Azure Blob Storage (or Azurite) through fsspec/adlfs.

Credentials reach the remote side of a step as the environment variables adlfs reads itself
(`AZURE_STORAGE_CONNECTION_STRING`, `AZURE_STORAGE_ACCOUNT_KEY`, ...), never in the job spec or argv.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from conveyor.artifact_stores.base import BaseArtifactStoreFlavor
from conveyor.artifact_stores.base_config import BaseArtifactStoreConfig

__all__ = ["AzureArtifactStoreConfig", "AzureArtifactStoreFlavor"]

_SCHEMES = ("az://", "abfs://", "abfss://")
#: adlfs's own variables: passed on from this process when the config names no credentials (as s3 passes the
#: AWS chain on)
CREDENTIAL_VARIABLES = ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY",
                        "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CLIENT_ID", "AZURE_STORAGE_CLIENT_SECRET",
                        "AZURE_STORAGE_TENANT_ID")
#: azure-core waits 300 s for a response by default: a lost one (seen against Azurite on a loaded machine) stalled
#: a log read that long; with these it is retried after a minute instead
TIMEOUTS: dict[str, int] = {"connection_timeout": 20, "read_timeout": 60}


class AzureArtifactStoreConfig(BaseArtifactStoreConfig):
    account_name: str | None = Field(default=None, description="the storage account (devstoreaccount1 for Azurite)")
    account_key: str | None = Field(default=None, description=(
        "the account's access key, as a secret reference ({{name.key}}): the value never enters the store"))
    sas_token: str | None = Field(default=None, description="a shared access signature, as a secret reference")
    connection_string: str | None = Field(default=None, description=(
        "a full connection string, as a secret reference, instead of account_name/account_key/endpoint_url"))
    endpoint_url: str | None = Field(default=None, description=(
        "the blob endpoint, for Azurite or a sovereign cloud (http://127.0.0.1:10000/devstoreaccount1); "
        "default https://<account_name>.blob.core.windows.net"))

    @field_validator("path")
    @classmethod
    def _azure_url(cls, value: str) -> str:
        scheme = next((s for s in _SCHEMES if value.startswith(s)), None)
        if scheme is None or len(value.rstrip("/")) <= len(scheme):
            raise ValueError(f"the azure artifact store takes an az://container[/prefix] (or abfs://) URL, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _endpoint_needs_account(self) -> "AzureArtifactStoreConfig":
        if self.endpoint_url and not self.connection_string and not self.account_name:
            raise ValueError("endpoint_url needs account_name (Azurite's is devstoreaccount1), or give a "
                             "connection_string instead")
        return self

    def _connection_string(self) -> str | None:
        """The connection string given, or the one an endpoint needs (adlfs takes a custom endpoint only so)."""
        if self.connection_string or not self.endpoint_url:
            return self.connection_string
        parts = [f"DefaultEndpointsProtocol={urlsplit(self.endpoint_url).scheme or 'https'}",
                 f"AccountName={self.account_name}"]
        if self.account_key:
            parts.append(f"AccountKey={self.account_key}")
        parts.append(f"BlobEndpoint={self.endpoint_url}")
        if self.sas_token:
            parts.append(f"SharedAccessSignature={self.sas_token.lstrip('?')}")
        return ";".join(parts) + ";"

    def storage_options(self) -> dict[str, Any]:
        connection = self._connection_string()
        if connection:
            return {"connection_string": connection, **TIMEOUTS}
        options = self.remote_options()
        if self.account_key:
            options["account_key"] = self.account_key
        if self.sas_token:
            options["sas_token"] = self.sas_token
        return options

    def remote_options(self) -> dict[str, Any]:
        """Never the credentials: those travel as environment. With a connection string (which carries the
        endpoint) only the timeouts: adlfs would prefer an account name given here to the string in the environment."""
        if self._connection_string() or not self.account_name:
            return dict(TIMEOUTS)
        return {"account_name": self.account_name, **TIMEOUTS}

    def remote_environment(self) -> dict[str, str]:
        """The credentials for the remote side, in the variables adlfs reads; each backend delivers them its
        secret way. From the config when it names any, else this process's AZURE_STORAGE_* variables."""
        connection = self._connection_string()
        if connection:
            return {"AZURE_STORAGE_CONNECTION_STRING": connection}
        if self.account_key or self.sas_token:
            configured = {"AZURE_STORAGE_ACCOUNT_KEY": self.account_key, "AZURE_STORAGE_SAS_TOKEN": self.sas_token}
            return {k: v for k, v in configured.items() if v}
        return {k: v for k in CREDENTIAL_VARIABLES if (v := os.environ.get(k))}


class AzureArtifactStoreFlavor(BaseArtifactStoreFlavor):
    """Stores artifacts in an Azure Blob Storage container (or Azurite via endpoint_url)."""

    name = "azure"

    @property
    def config_class(self) -> type[AzureArtifactStoreConfig]:
        return AzureArtifactStoreConfig
