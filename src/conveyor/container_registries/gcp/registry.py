"""Artifact Registry's login: the user `oauth2accesstoken` and an access token of Application Default Credentials."""

from __future__ import annotations

from conveyor.container_registries.base import BaseContainerRegistry, RegistryLogin
from conveyor.exceptions import ConfigError

__all__ = ["GCPContainerRegistry", "TOKEN_USER"]

TOKEN_USER = "oauth2accesstoken"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)


class GCPContainerRegistry(BaseContainerRegistry):
    """`gcloud auth application-default login`, a service account key or the metadata server, as google-auth finds."""

    def token_login(self) -> RegistryLogin:
        try:
            import google.auth
            import google.auth.transport.requests
        except ImportError:
            raise ConfigError("the gcp container registry needs google-auth: pip install 'conveyor[gcp]'") from None
        try:
            credentials, _ = google.auth.default(scopes=list(SCOPES))
        except google.auth.exceptions.DefaultCredentialsError as err:
            raise ConfigError(f"container registry {self.name!r}: no Google credentials ({err}); run "
                              "`gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS") from None
        credentials.refresh(google.auth.transport.requests.Request())
        return RegistryLogin(TOKEN_USER, str(credentials.token))
