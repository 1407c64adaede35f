"""Steps of the conformance suite, importable by module name on the remote side of every flavor."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

from conveyor import get_step_context, step


class RemoteFailure(RuntimeError):
    pass


@step
def numbers(n: int = 4) -> list[int]:
    return list(range(n))


@step
def total(values: list[int]) -> tuple[Annotated[int, "sum"], Annotated[int, "pid"], Annotated[str, "host_env"],
                                      Annotated[dict, "context"]]:
    print(f"adding {len(values)} values", flush=True)
    c = get_step_context()  # what the step knows of itself, on every flavor
    seen = {"pipeline": c.pipeline.name, "run_name": c.pipeline_run.name, "run_id": c.pipeline_run.id,
            "step_name": c.step_name, "step_run_name": c.step_run.name, "step_run_id": c.step_run.id,
            "attempt": c.attempt, "sum_uri": c.get_output_artifact_uri("sum"), "outputs": sorted(c.output_artifact_uris)}
    return sum(values), os.getpid(), os.environ.get("CONVEYOR_STEP_NAME", ""), seen


@step
def fails(values: list[int]) -> int:
    raise RemoteFailure(f"cannot handle {len(values)} values")


@step
def ticks(sentinel: str) -> int:
    print("tick-0", flush=True)
    deadline = time.time() + 60
    while not Path(sentinel).exists() and time.time() < deadline:
        time.sleep(0.1)
    print("tick-1", flush=True)
    return 2


@step
def sleeps(seconds: float) -> int:
    print("sleeping", flush=True)
    time.sleep(seconds)
    return 1


def _cpu_quota() -> float | None:
    """CPUs this process's cgroup may use (a container's CPU limit), or None when it is unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()  # cgroup v2
    except (OSError, ValueError):
        try:
            quota = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text().strip()  # cgroup v1
            period = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    return None if quota in ("max", "-1") else int(quota) / int(period)


@step
def resources_seen() -> dict:
    return {"affinity": len(os.sched_getaffinity(0)), "omp": os.environ.get("OMP_NUM_THREADS"),
            "slurm_cpus": os.environ.get("SLURM_CPUS_PER_TASK"), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "cpu_quota": _cpu_quota()}


@step
def hog(megabytes: int) -> int:
    blob = b"x" * (megabytes * 10**6)
    time.sleep(3)  # stay alive long enough for a sampling memory monitor to notice
    return len(blob)


@step
def flaky(counter: str) -> int:
    path = Path(counter)
    attempts = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(attempts))
    if attempts < 2:
        raise ConnectionError("transient failure on the first attempt")
    return attempts


@step
def gated(gate: str, counter: str) -> int:
    """Records each start, then waits for the test to open the gate: a step that is surely mid-run when killed."""
    with open(counter, "a") as fh:
        fh.write("started\n")
    print("gated", flush=True)
    deadline = time.time() + 120
    while not Path(gate).exists() and time.time() < deadline:
        time.sleep(0.05)
    return len(Path(counter).read_text().splitlines())


@step
def times_ten(value: int) -> int:
    return value * 10


@step
def uses_secret(variable: str) -> str:
    """Prints the secret (the log must show it redacted) and returns only its hash."""
    import hashlib

    value = os.environ.get(variable, "")
    print(f"the token is {value}", flush=True)
    return hashlib.sha256(value.encode()).hexdigest()
