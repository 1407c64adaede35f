"""Step side of an Azure ML job: fetch the job's Key Vault secrets with its managed identity, then run the step.

Secret values never enter the job definition: it names only the vault and, per variable, the Key Vault secret
that holds it (`CONVEYOR_KEYVAULT_SECRETS`, JSON). This module reads them into the process environment and hands
over to `conveyor.entrypoints.step_operator`. Light: azure-identity and azure-keyvault-secrets load only when
there is something to fetch.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Callable

VAULT_ENV = "CONVEYOR_KEYVAULT_URL"
SECRETS_ENV = "CONVEYOR_KEYVAULT_SECRETS"
IDENTITY_ENV = "CONVEYOR_AZURE_IDENTITY_CLIENT_ID"
#: import path of a `reader(vault_url, secret_name) -> str`: set by a test platform's process environment (never by
#: the job definition) where no Key Vault exists
READER_ENV = "CONVEYOR_AZUREML_SECRET_READER"


def _reader(vault_url: str) -> Callable[[str], str]:
    hook = os.environ.get(READER_ENV)
    if hook:
        import importlib

        module, _, attr = hook.partition(":")
        fn = getattr(importlib.import_module(module), attr)
        return lambda name: fn(vault_url, name)
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
    from azure.keyvault.secrets import SecretClient

    client_id = os.environ.get(IDENTITY_ENV)
    credential = ManagedIdentityCredential(client_id=client_id) if client_id else DefaultAzureCredential()
    client = SecretClient(vault_url=vault_url, credential=credential)
    return lambda name: client.get_secret(name).value or ""


def fetch_secrets() -> None:
    """Put the job's Key Vault secrets into this process's environment (and drop the references)."""
    names = json.loads(os.environ.pop(SECRETS_ENV, "") or "{}")
    vault = os.environ.pop(VAULT_ENV, None)
    if not names:
        return
    if not vault:
        raise SystemExit(f"{SECRETS_ENV} is set but {VAULT_ENV} is not: the job cannot read its secrets")
    read = _reader(vault)
    os.environ.update({var: read(secret) for var, secret in names.items()})


def main(argv: list[str] | None = None) -> int:
    fetch_secrets()
    from conveyor.entrypoints.step_operator import main as run_step

    return run_step(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
