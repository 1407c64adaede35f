"""Steps the Kubernetes tests run in pods: a module of its own, importing nothing the image lacks (no pytest)."""

from __future__ import annotations

import os
import time

from conveyor import step


@step
def make(n: int = 4) -> list[int]:
    return list(range(n))


@step
def remote_sum(values: list[int]) -> tuple[int, str]:
    print(f"summing {len(values)} values", flush=True)
    return sum(values), os.environ.get("API_TOKEN", "")


@step
def double(value: int) -> int:
    return 2 * value


@step
def hog(megabytes: int) -> int:
    blob = b"x" * (megabytes * 10**6)
    return len(blob)


@step
def nap(seconds: float) -> int:
    print("napping", flush=True)
    time.sleep(seconds)
    return 1
