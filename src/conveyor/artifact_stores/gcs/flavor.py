"""The `gcs` artifact store: Google Cloud Storage, or any server speaking its JSON API, through fsspec/gcsfs.

Credentials reach the remote side of a step as environment (fsspec's own `FSSPEC_GS` config variable), never
in the job spec or argv; unset, each side uses Google's default chain (a VM's or a job's service account).
"""

from __future__ import annotations

import json
import os
from typing import Any

from pydantic import Field, field_validator

from conveyor.artifact_stores.base import BaseArtifactStoreFlavor
from conveyor.artifact_stores.base_config import BaseArtifactStoreConfig

__all__ = ["EMULATOR_ENVIRONMENT", "GCSArtifactStoreConfig", "GCSArtifactStoreFlavor"]

#: what gcsfs needs against an emulator (endpoint_url set), read by gcsfs itself: its default filesystem asks
#: Google's gRPC storage-control API for each bucket's layout (no emulator serves it: a 60 s timeout per call,
#: never cached), and a raw token's expiry from oauth2.googleapis.com (unreachable beside an emulator)
EMULATOR_ENVIRONMENT = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "FETCH_RAW_TOKEN_EXPIRY": "false"}

_SCHEMES = ("gs://", "gcs://")


class GCSArtifactStoreConfig(BaseArtifactStoreConfig):
    project: str | None = Field(default=None, description="the Google Cloud project (billing, bucket listing)")
    endpoint_url: str | None = Field(default=None, description=(
        "a GCS-compatible server instead of storage.googleapis.com (an emulator such as fake-gcs-server)"))
    service_account_key: str | None = Field(default=None, description=(
        "a service account's JSON key, as a secret reference ({{name.key}}): the value never enters the store. "
        "Unset: Google's default credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud, the VM's account)"))
    token: str | None = Field(default=None, description=(
        "an OAuth2 access token, as a secret reference, instead of a service account key (short-lived)"))

    @field_validator("path")
    @classmethod
    def _gs_url(cls, value: str) -> str:
        scheme = next((s for s in _SCHEMES if value.startswith(s)), None)
        if scheme is None or len(value.rstrip("/")) <= len(scheme):
            raise ValueError(f"the gcs artifact store takes a gs://bucket[/prefix] URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("service_account_key")
    @classmethod
    def _key_json(cls, value: str | None) -> str | None:
        if value is None or "{{" in value:  # a reference: checked once resolved
            return value
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict) or "type" not in parsed:
            raise ValueError("service_account_key takes the JSON key file's content (store it as a secret: "
                             "conveyor secret create gcp key=@key.json, then --service_account_key={{gcp.key}})")
        return value

    def _credentials(self) -> dict[str, Any] | str | None:
        if self.service_account_key:
            return json.loads(self.service_account_key)  # type: ignore[no-any-return]
        return self.token or None

    def storage_options(self) -> dict[str, Any]:
        options: dict[str, Any] = self.remote_options()
        credentials = self._credentials()
        if credentials is not None:
            options["token"] = credentials
        if self.endpoint_url:
            # read by gcsfs on import and on connecting: set before this process first uses it (never overriding
            # a value the user set)
            for key, value in EMULATOR_ENVIRONMENT.items():
                os.environ.setdefault(key, value)
        return options

    def remote_options(self) -> dict[str, Any]:
        """Never the credentials: those travel as environment."""
        options: dict[str, Any] = {}
        if self.project:
            options["project"] = self.project
        if self.endpoint_url:
            options["endpoint_url"] = self.endpoint_url
            if self._credentials() is None:
                options["token"] = "anon"  # an emulator without credentials: no default chain to look for
        return options

    def remote_environment(self) -> dict[str, str]:
        """The credentials for the remote side, as fsspec's config variable (every gs:// filesystem it makes
        reads it); the emulator switches with an endpoint. Without configured credentials the remote side uses
        its own default chain: a path in this machine's GOOGLE_APPLICATION_CREDENTIALS means nothing there."""
        env = dict(EMULATOR_ENVIRONMENT) if self.endpoint_url else {}
        credentials = self._credentials()
        if credentials is not None:
            env["FSSPEC_GS"] = json.dumps({"token": credentials})
        return env


class GCSArtifactStoreFlavor(BaseArtifactStoreFlavor):
    """Stores artifacts in a Google Cloud Storage bucket (or a GCS emulator via endpoint_url)."""

    name = "gcs"

    @property
    def config_class(self) -> type[GCSArtifactStoreConfig]:
        return GCSArtifactStoreConfig
