"""The `local` artifact store: a directory on this machine (or a shared filesystem mounted here).

Its config model (pydantic) lives in `config.py` and loads only when asked for: a stored config that is just an
absolute path, as the default stack's is, is checked here by the same rule (`local_path`) without it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from conveyor.artifact_stores.base import BaseArtifactStoreFlavor

if TYPE_CHECKING:
    from conveyor.artifact_stores.local.config import LocalArtifactStoreConfig
    from conveyor.artifact_stores.local.store import LocalArtifactStore

__all__ = ["LocalArtifactStoreConfig", "LocalArtifactStoreFlavor", "local_path"]


def local_path(value: str) -> str:
    """The store's directory, absolute; a URL is refused (ValueError: the config's validator reports it)."""
    if "://" in value:
        raise ValueError(f"the local artifact store takes a directory, not a URL ({value!r}); "
                         "use a remote artifact store flavor for URLs")
    return os.path.abspath(os.path.expanduser(value))


class LocalArtifactStoreFlavor(BaseArtifactStoreFlavor):
    """Stores artifacts in a local directory."""

    name = "local"

    @property
    def config_class(self) -> type["LocalArtifactStoreConfig"]:
        from conveyor.artifact_stores.local.config import LocalArtifactStoreConfig

        return LocalArtifactStoreConfig

    def plain_config(self, raw: Mapping[str, Any]) -> dict[str, Any] | None:
        """Just a path, a string that is no URL (the config stored by `register`, the default stack's): its
        directory. Anything else is validated by the model, which reports what is wrong."""
        path = raw.get("path")
        if set(raw) != {"path"} or not isinstance(path, str) or "://" in path:
            return None
        return {"path": local_path(path)}

    @property
    def implementation_class(self) -> type["LocalArtifactStore"]:
        from conveyor.artifact_stores.local.store import LocalArtifactStore

        return LocalArtifactStore


def __getattr__(name: str) -> Any:
    """`LocalArtifactStoreConfig` was defined here; it still imports from here, loading pydantic then."""
    if name == "LocalArtifactStoreConfig":
        from conveyor.artifact_stores.local.config import LocalArtifactStoreConfig

        return LocalArtifactStoreConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
