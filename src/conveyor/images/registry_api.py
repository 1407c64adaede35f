"""Pushing a built image to a container registry, and asking the registry whether it has a tag already.

The check is one manifest HEAD on the registry's HTTP API v2 (standard library `urllib`, no engine, no CLI): an
up-to-date image costs one round trip. A registry that wants a bearer token (Artifact Registry, ACR, GHCR) answers
401 with a `WWW-Authenticate: Bearer realm=...` challenge; the token is fetched with the same login and the HEAD
repeated. The push goes through the Docker Engine API (Docker, or Podman's compatible service), which also does
the upload; the digest recorded is the registry's own (`Docker-Content-Digest`), so the step runs exactly what was
pushed (`repository@sha256:...`), whatever the tag points at later.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from conveyor.exceptions import ConveyorError

if TYPE_CHECKING:
    from conveyor.container_registries.base import RegistryLogin

__all__ = ["MANIFEST_TYPES", "PushTarget", "RegistryError", "ensure_pushed", "manifest_digest",
           "push_image"]

#: what a manifest request accepts: OCI and Docker schema 2, single images and indexes
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
                  "application/vnd.oci.image.index.v1+json",
                  "application/vnd.docker.distribution.manifest.list.v2+json")
TIMEOUT_S = 30.0


class RegistryError(ConveyorError):
    """The registry refused or could not be reached; the message names the registry and the likely fix."""


@dataclass(frozen=True)
class PushTarget:
    """`host[:port]/namespace/name:tag` and how to reach it."""

    host: str
    repository: str  # path inside the registry: namespace/name
    tag: str
    login: RegistryLogin | None = None
    insecure: bool = False

    @property
    def name(self) -> str:
        """`host/repository`, as an engine names it."""
        return f"{self.host}/{self.repository}"

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag}"

    def by_digest(self, digest: str) -> str:
        return f"{self.name}@{digest}"

    @property
    def base_url(self) -> str:
        return f"{'http' if self.insecure else 'https'}://{self.host}"


def _basic(login: RegistryLogin) -> str:
    return "Basic " + base64.b64encode(f"{login.username}:{login.password}".encode()).decode()


def _challenge(header: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def _bearer(target: PushTarget, header: str) -> str:
    """A bearer token from the challenge's realm, asked with the login (anonymous pull tokens without one)."""
    params = _challenge(header)
    realm = params.pop("realm", "")
    if not realm:
        raise RegistryError(f"registry {target.host} asked for a token without naming where to get it: {header!r}")
    params.setdefault("scope", f"repository:{target.repository}:pull")
    request = urllib.request.Request(f"{realm}?{urllib.parse.urlencode(params)}")
    if target.login is not None:
        request.add_header("Authorization", _basic(target.login))
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as err:
        raise RegistryError(f"registry {target.host} refused the login for a token ({err.code}): check the "
                            "container registry's username and password") from None
    return "Bearer " + str(body.get("token") or body.get("access_token") or "")


def manifest_digest(target: PushTarget, *, opener: Callable[..., Any] = urllib.request.urlopen) -> str | None:
    """The digest of `target`'s tag on the registry, None when it has no such tag: one HEAD request (two when the
    registry wants a bearer token)."""
    url = f"{target.base_url}/v2/{target.repository}/manifests/{target.tag}"
    auth = _basic(target.login) if target.login is not None else None
    for attempt in range(2):
        request = urllib.request.Request(url, method="HEAD", headers={"Accept": ", ".join(MANIFEST_TYPES)})
        if auth:
            request.add_header("Authorization", auth)
        try:
            with opener(request, timeout=TIMEOUT_S) as response:
                digest = response.headers.get("Docker-Content-Digest")
                if not digest:
                    raise RegistryError(f"registry {target.host} sent no Docker-Content-Digest for {target.reference}")
                return str(digest)
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            challenge = err.headers.get("WWW-Authenticate", "") if err.headers else ""
            if err.code == 401 and attempt == 0 and challenge.lower().startswith("bearer"):
                auth = _bearer(target, challenge)
                continue
            if err.code in (401, 403):
                raise RegistryError(f"registry {target.host} refused {target.reference} ({err.code}): give the "
                                    "container registry a username and password as secret references "
                                    "(`conveyor container-registry update NAME --username={{s.user}} "
                                    "--password={{s.password}}`)") from None
            raise RegistryError(f"registry {target.host} answered {err.code} for {target.reference}") from None
        except urllib.error.URLError as err:
            hint = (" (a plain-HTTP registry needs --insecure=true)" if "SSL" in str(err.reason) or "ssl" in
                    str(err.reason) else "")
            raise RegistryError(f"cannot reach container registry {target.base_url}: {err.reason}{hint}. Is it "
                                "running, and the registry's uri right (`conveyor container-registry describe "
                                "NAME`)?") from None
    raise RegistryError(f"registry {target.host} kept refusing the token for {target.reference}")


def push_image(client: Any, local: str, target: PushTarget, log: Callable[[str], None] | None = None) -> None:
    """Tag `local` as the target and push it through the engine (Podman: `tlsVerify=false` when insecure)."""
    client.api.tag(local, target.name, target.tag)
    params: dict[str, Any] = {"tag": target.tag}
    if target.insecure:
        params["tlsVerify"] = "false"  # Podman's service; Docker treats 127.0.0.0/8 as insecure by itself
    auth = {"username": target.login.username, "password": target.login.password,
            "serveraddress": target.host} if target.login else {}
    headers = {"X-Registry-Auth": base64.urlsafe_b64encode(json.dumps(auth).encode()).decode()}
    response = client.api._post(client.api._url("/images/{0}/push", target.name), params=params, headers=headers,
                                stream=True, timeout=None)
    client.api._raise_for_status(response)
    error = None
    for chunk in client.api._stream_helper(response, decode=True):
        if chunk.get("error") or chunk.get("errorDetail"):
            error = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message")
        text = chunk.get("status") or chunk.get("stream") or ""
        if text and log is not None:
            log(text if text.endswith("\n") else text + "\n")
    if error:
        raise RegistryError(f"pushing {target.reference} failed: {error}")


_guard = threading.Lock()
_locks: dict[tuple[str, str], threading.Lock] = {}


def ensure_pushed(target: PushTarget, build: Callable[[], tuple[Any, str]],
                  log: Callable[[str], None] | None = None) -> tuple[str, bool]:
    """(`repository@sha256:...`, whether it was pushed now): the registry's digest of the tag when it has it (one
    manifest request, no engine); else `build()` -> (engine client, local tag), pushed, and its digest read back."""
    key = (target.name, target.tag)
    with _guard:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:  # two steps of one run needing one image push it once
        digest = manifest_digest(target)
        if digest is not None:
            return target.by_digest(digest), False
        client, local = build()
        if log is not None:
            log(f"pushing {target.reference}\n")
        push_image(client, local, target, log)
        digest = manifest_digest(target)
        if digest is None:
            raise RegistryError(f"pushed {target.reference}, but the registry does not list it: is "
                                f"{target.host} the registry the engine pushed to?")
        return target.by_digest(digest), True
