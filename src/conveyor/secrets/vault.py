"""Encryption at rest (Fernet, from `cryptography`) with a key that never enters the metadata store.

The key comes from `CONVEYOR_SECRETS_KEY` (the key itself, for CI and shared servers), else the file named by
`CONVEYOR_SECRETS_KEY_FILE`, else `$XDG_CONFIG_HOME/conveyor/secrets.key` (`~/.config/...`), created 0600 on
first use. Everyone sharing a store must share the key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.exceptions import ConveyorError

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

    from conveyor.store.store import MetadataStore

KEY_ENV, KEY_FILE_ENV = "CONVEYOR_SECRETS_KEY", "CONVEYOR_SECRETS_KEY_FILE"


class SecretError(ConveyorError):
    pass


def key_file() -> Path:
    if os.environ.get(KEY_FILE_ENV):
        return Path(os.environ[KEY_FILE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "conveyor" / "secrets.key"


def _fernet(create: bool) -> "Fernet":
    from cryptography.fernet import Fernet

    raw = os.environ.get(KEY_ENV)
    where = KEY_ENV
    if not raw:
        path = key_file()
        where = str(path)
        if not path.exists():
            if not create:
                raise SecretError(f"no secrets key at {path}: it was made where the secrets were created; copy it "
                                  f"here (mode 0600), or set {KEY_ENV} or {KEY_FILE_ENV}")
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(Fernet.generate_key())
        raw = path.read_text().strip()
    try:
        return Fernet(raw.encode())
    except ValueError:
        raise SecretError(f"the secrets key from {where} is not a valid key (32 url-safe base64-encoded bytes)") from None


def check_name(kind: str, name: str) -> None:
    """The names pattern of conveyor.config.names, without '.' (the dot separates secret and key in {{name.key}})."""
    from conveyor.config.names import check_name as check

    check(kind, name, allow_dot=False)


class Vault:
    """Secrets of one metadata store; values are decrypted only when asked for, and cached per process."""

    def __init__(self, store: "MetadataStore") -> None:
        self.store = store
        self._cache: dict[str, dict[str, str]] = {}

    def set(self, name: str, values: dict[str, str], *, replace: bool) -> None:
        check_name("secret", name)
        for key in values:
            check_name("key", key)
        if not values:
            raise SecretError(f"secret {name!r} needs at least one KEY=VALUE")
        token = _fernet(create=True).encrypt(json.dumps(values, sort_keys=True).encode()).decode()
        self.store.put_secret(name, sorted(values), token, replace=replace)
        self._cache.pop(name, None)

    def delete(self, name: str) -> None:
        self.store.delete_secret(name)
        self._cache.pop(name, None)

    def get(self, name: str) -> dict[str, str]:
        if name not in self._cache:
            row = self.store.get_secret(name)
            if row is None:
                known = ", ".join(r["name"] for r in self.store.list_secrets()) or "none yet"
                raise SecretError(f"secret {name!r} does not exist (known: {known}): create it with "
                                  f"`conveyor secret create {name} KEY=VALUE`")
            from cryptography.fernet import InvalidToken

            try:
                self._cache[name] = json.loads(_fernet(create=False).decrypt(row["value"].encode()))
            except InvalidToken:
                raise SecretError(f"cannot decrypt secret {name!r}: this secrets key is not the one it was "
                                  f"encrypted with (see {KEY_ENV} / {KEY_FILE_ENV})") from None
        return self._cache[name]

    def lookup(self, name: str, key: str) -> str:
        values = self.get(name)
        if key not in values:
            raise SecretError(f"secret {name!r} has no key {key!r} (its keys: {', '.join(sorted(values))})")
        return values[key]

    def resolve(self, value: Any) -> tuple[Any, set[str]]:
        from conveyor.secrets.references import resolve_references

        return resolve_references(value, self.lookup)
