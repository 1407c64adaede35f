"""Secret variables for a backend that shows a job's environment to others: sealed with a one-time key.

The ciphertext travels in the environment, the key as a 0600 file beside the job spec; the step's entrypoint
reads the key, deletes it and opens the envelope, and the launcher deletes the key again when the job ends.
Variables the entrypoint needs to reach the artifact store (where the key is) stay outside the envelope.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from conveyor.secrets.runtime import REDACT_ENV

if TYPE_CHECKING:
    from conveyor.artifacts.store import ArtifactStore

SEALED_ENV, SEALED_KEY_ENV = "CONVEYOR_SEALED_ENV", "CONVEYOR_SEALED_KEY"


def seal(environment: dict[str, str], store: "ArtifactStore", key_uri: str, keep_open: set[str]) -> bool:
    """Move the secret variables (those named in CONVEYOR_REDACT_ENV) into an envelope; False if there are none."""
    from cryptography.fernet import Fernet

    names = [n for n in environment.get(REDACT_ENV, "").split(",") if n and n not in keep_open]
    if not names:
        return False
    sealed = {n: environment.pop(n) for n in names}
    key = Fernet.generate_key()
    store.write_private(key_uri, key)
    environment[SEALED_ENV] = Fernet(key).encrypt(json.dumps(sealed).encode()).decode()
    environment[SEALED_KEY_ENV] = key_uri
    return True


def unseal(store: "ArtifactStore") -> None:
    """On the step's side: read and delete the key, and put the variables into this process's environment."""
    token = os.environ.pop(SEALED_ENV, None)
    key_uri = os.environ.pop(SEALED_KEY_ENV, None)
    if not token or not key_uri:
        return
    from cryptography.fernet import Fernet

    key = store.read_bytes(key_uri)
    store.rm(key_uri)
    os.environ.update(json.loads(Fernet(key).decrypt(token.encode())))
