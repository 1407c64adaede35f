"""The sbatch arguments of one step (pure: what `dry_run` shows); the job script is the batch base's."""

from __future__ import annotations

import math
from typing import Any

from conveyor.step_operators.info import StepRunInfo

__all__ = ["sbatch_arguments"]


def sbatch_arguments(info: StepRunInfo, config: Any, settings: Any, output_path: str) -> list[str]:
    r = info.config.resource_settings
    # --no-requeue: a node failure ends the job, and Conveyor re-submits it as a new, visible attempt
    args = [f"--job-name={info.job_name}", f"--output={output_path}", "--open-mode=append", "--no-requeue"]
    partition = (settings.partition if settings else None) or config.partition
    if partition:
        args.append(f"--partition={partition}")
    if config.account:
        args.append(f"--account={config.account}")
    if config.qos:
        args.append(f"--qos={config.qos}")
    if r.cpu_count is not None:
        args.append(f"--cpus-per-task={max(1, math.ceil(r.cpu_count))}")
    if r.memory_bytes is not None:
        args.append(f"--mem={max(1, math.ceil(r.memory_bytes / 2**20))}M")
    if r.gpu_count:
        kind = (settings.gres if settings else None) or "gpu"
        args.append(f"--gres={kind}:{r.gpu_count}")
    time_limit = settings.time_limit if settings and settings.time_limit else None
    if time_limit is None and info.config.timeout:
        time_limit = str(max(1, math.ceil(info.config.timeout / 60)))  # minutes
    if time_limit:
        args.append(f"--time={time_limit}")
    if settings:
        if settings.constraint:
            args.append(f"--constraint={settings.constraint}")
        if settings.exclusive:
            args.append("--exclusive")
        if settings.nodes:
            args.append(f"--nodes={settings.nodes}")
        args += list(settings.extra_args)
    return args + list(config.sbatch_args)
