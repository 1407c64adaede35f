"""Steps the Azure ML and Modal tests run through their fakes: a module of its own, importing nothing a step image
would lack (no pytest)."""

from __future__ import annotations

import hashlib
import os
import time

from conveyor import step


@step
def make(n: int = 4) -> list[int]:
    return list(range(n))


@step
def remote_sum(values: list[int]) -> int:
    print(f"summing {len(values)} values", flush=True)
    return sum(values)


@step
def nap(seconds: float) -> int:
    print("napping", flush=True)
    time.sleep(seconds)
    return 1


@step
def uses_secret(variable: str) -> str:
    """Prints the secret (the stored log must show it redacted) and returns only its hash."""
    value = os.environ.get(variable, "")
    print(f"the token is {value}", flush=True)
    return hashlib.sha256(value.encode()).hexdigest()
