"""Resolution at launch, and what this process must keep out of logs because of it."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from conveyor.secrets.references import redact as _redact

if TYPE_CHECKING:
    from conveyor.secrets.vault import Vault

#: every value this process resolved from a secret; the log sinks redact them
_RESOLVED: set[str] = set()
_LOCK = threading.Lock()
#: the remote side reads the names of the environment variables whose values it must redact from here
REDACT_ENV = "CONVEYOR_REDACT_ENV"


def resolve(value: Any, vault: "Vault") -> Any:
    """`value` with its `{{name.key}}` references replaced from `vault` (the project's secrets), and the values
    remembered for redaction."""
    resolved, used = vault.resolve(value)
    with _LOCK:
        _RESOLVED.update(used)
    return resolved


def known() -> frozenset[str]:
    with _LOCK:
        return frozenset(_RESOLVED)


def redact(text: str) -> str:
    return _redact(text, known()) if _RESOLVED else text


def mark_for_redaction(environment: dict[str, str]) -> None:
    """Name, in the environment itself, the variables whose values the remote side must redact from its output."""
    secret_values = known()
    names = sorted(k for k, v in environment.items() if v in secret_values)
    if names:
        environment[REDACT_ENV] = ",".join(names)
