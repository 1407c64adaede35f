"""Steps run in containers by tests/test_docker_operator.py (imported by module name inside the container)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from conveyor import step


@step
def produce(n: int = 4) -> dict:
    print(f"producing {n} in a container", flush=True)
    return {"values": list(range(n)), "host": socket.gethostname(), "in_container": Path("/run/.containerenv").exists()
            or Path("/.dockerenv").exists()}


@step
def consume(data: dict) -> int:
    return sum(data["values"])


@step
def cpu_quota() -> float | None:
    quota = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
    if quota.exists():
        value = int(quota.read_text())
        return None if value < 0 else value / int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
    quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    return None if quota == "max" else int(quota) / int(period)


@step
def whoami() -> str:
    return os.environ.get("CONVEYOR_STEP_NAME", "")
