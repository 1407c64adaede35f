"""The `s3` artifact store: any S3-compatible object store through fsspec/s3fs."""

from __future__ import annotations

from typing import Any

import os

from pydantic import Field, field_validator

from conveyor.artifact_stores.base import BaseArtifactStoreConfig, BaseArtifactStoreFlavor


CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                        "AWS_REGION", "AWS_PROFILE")


class S3ArtifactStoreConfig(BaseArtifactStoreConfig):
    endpoint_url: str | None = Field(default=None, description="for S3-compatible stores (MinIO, Ceph, moto)")
    region: str | None = Field(default=None, description="AWS region of the bucket")

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
        return options

    def remote_environment(self) -> dict[str, str]:
        """The AWS credentials this process found, for the remote side; each backend delivers them its secret way.

        Credentials come from the standard AWS chain (environment, profile); they are never part of the config,
        so they never reach the metadata store or a job spec.
        """
        return {k: v for k in CREDENTIAL_VARIABLES if (v := os.environ.get(k))}


class S3ArtifactStoreFlavor(BaseArtifactStoreFlavor):
    """Stores artifacts in an S3 bucket (or any S3-compatible store via endpoint_url)."""

    name = "s3"

    @property
    def config_class(self) -> type[S3ArtifactStoreConfig]:
        return S3ArtifactStoreConfig
