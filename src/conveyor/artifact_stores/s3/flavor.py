"""The `s3` artifact store: any S3-compatible object store through fsspec/s3fs."""

from __future__ import annotations

import os
from typing import Any

from pydantic import Field, field_validator

from conveyor.artifact_stores.base import BaseArtifactStoreFlavor
from conveyor.artifact_stores.base_config import BaseArtifactStoreConfig

CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                        "AWS_REGION", "AWS_PROFILE")


class S3ArtifactStoreConfig(BaseArtifactStoreConfig):
    endpoint_url: str | None = Field(default=None, description="for S3-compatible stores (MinIO, Ceph, moto)")
    region: str | None = Field(default=None, description="AWS region of the bucket")
    aws_access_key_id: str | None = Field(default=None, description=(
        "access key id; give it as a secret reference, {{name.key}}. Unset: the default AWS chain"))
    aws_secret_access_key: str | None = Field(default=None, description=(
        "secret access key, as a secret reference ({{name.key}}): the value never enters the store"))
    aws_session_token: str | None = Field(default=None, description="session token, as a secret reference")

    @field_validator("path")
    @classmethod
    def _s3_url(cls, value: str) -> str:
        if not value.startswith("s3://") or len(value) <= len("s3://"):
            raise ValueError(f"the s3 artifact store takes an s3://bucket[/prefix] URL, got {value!r}")
        return value.rstrip("/")

    def storage_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        client: dict[str, Any] = {}
        if self.endpoint_url:
            client["endpoint_url"] = self.endpoint_url
        if self.region:
            client["region_name"] = self.region
        if client:
            options["client_kwargs"] = client
        for option, value in (("key", self.aws_access_key_id), ("secret", self.aws_secret_access_key),
                              ("token", self.aws_session_token)):
            if value:
                options[option] = value
        return options

    def remote_options(self) -> dict[str, Any]:
        """Never the credentials: those travel as environment."""
        return {k: v for k, v in self.storage_options().items() if k not in ("key", "secret", "token")}

    def remote_environment(self) -> dict[str, str]:
        """The credentials for the remote side; each backend delivers them its secret way.

        From the config (resolved from secret references at launch) when given there, else from the standard
        AWS chain of this process (environment, profile). Never part of a job spec.
        """
        if self.aws_access_key_id or self.aws_secret_access_key:
            configured = {"AWS_ACCESS_KEY_ID": self.aws_access_key_id, "AWS_SECRET_ACCESS_KEY": self.aws_secret_access_key,
                          "AWS_SESSION_TOKEN": self.aws_session_token, "AWS_DEFAULT_REGION": self.region}
            return {k: v for k, v in configured.items() if v}
        return {k: v for k in CREDENTIAL_VARIABLES if (v := os.environ.get(k))}


class S3ArtifactStoreFlavor(BaseArtifactStoreFlavor):
    """Stores artifacts in an S3 bucket (or any S3-compatible store via endpoint_url)."""

    name = "s3"

    @property
    def config_class(self) -> type[S3ArtifactStoreConfig]:
        return S3ArtifactStoreConfig
