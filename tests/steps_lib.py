"""Steps shared by several tests, importable by name on the remote side of a step operator."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

from conveyor import step
from conveyor.config import ResourceSettings


@step
def make_numbers(n: int = 5) -> list[int]:
    return list(range(n))


@step(step_operator="local")
def remote_sum(numbers: list[int]) -> tuple[Annotated[int, "total"], Annotated[int, "pid"]]:
    print(f"summing {len(numbers)} numbers", flush=True)
    return sum(numbers), os.getpid()


@step
def double(x: int) -> int:
    return 2 * x


@step(step_operator="local", settings={"resources": ResourceSettings(cpu_count=1)})
def affinity() -> tuple[Annotated[list[int], "cpus"], Annotated[str, "omp"]]:
    return sorted(os.sched_getaffinity(0)), os.environ.get("OMP_NUM_THREADS", "")


@step(step_operator="local", settings={"resources": ResourceSettings(memory="200MB")})
def hog_memory() -> int:
    blob = b"x" * (600 * 10**6)  # touches every page
    return len(blob)


class TrainingDiverged(RuntimeError):
    pass


@step(step_operator="local")
def explode(numbers: list[int]) -> int:
    raise TrainingDiverged(f"loss became NaN after {len(numbers)} epochs")


@step
def sleeper(seconds: float, tag: int) -> float:
    time.sleep(seconds)
    return time.time()


@step
def touch_counter(path: str, value: int) -> int:
    """Appends a line per execution, so tests can tell executed from cached."""
    with open(path, "a") as fh:
        fh.write(f"{value}\n")
    return value


def executions(path: str | Path) -> int:
    p = Path(path)
    return len(p.read_text().splitlines()) if p.exists() else 0
