"""A step process made ahead of its step: Conveyor's remote side is imported before the job arrives.

The local step operator keeps one of these spare (forked by `forkserver.py`), so a step pays only for importing
its own code. The job arrives as one JSON line; the worker applies the step's environment and limits to itself
before any of the step's code is imported, then runs the ordinary entrypoint. An empty line or EOF (the
orchestrator is gone) ends it.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

__all__ = ["WARM_MODULES", "preload", "run"]

#: imported before a job arrives: the entrypoint and what every step imports after it, the SDK a step's module
#: imports (`from conveyor import step, pipeline`) included. Conveyor's own modules and the standard library
#: only: none reads the environment or the CPU affinity when imported (the step's are applied later), none
#: imports pydantic or SQLAlchemy, none runs user code.
WARM_MODULES = (
    "conveyor.entrypoints.step_operator",
    "conveyor.artifacts.materializers",
    "conveyor.artifacts.by_name",
    "conveyor.execution.jobspec",
    "conveyor.execution.logs",
    "conveyor.execution.runner",
    "conveyor.metadata",
    "conveyor.pipelines.pipeline",
    "conveyor.pipelines.source",
    "conveyor.secrets.envelope",
    "conveyor.steps",
    "conveyor.steps.type_checks",
    "conveyor.utils.procs",
    "conveyor.utils.reaper",
    "ctypes",  # the entrypoint's prctl (utils/reaper.py)
    "locale",  # gettext's, for argparse
    "numbers",
    "resource",
)


def preload() -> None:
    for name in WARM_MODULES:
        importlib.import_module(name)
    from conveyor.entrypoints.step_operator import parser

    parser()


def _apply(job: dict) -> None:  # type: ignore[type-arg]
    os.environ.clear()
    os.environ.update(job["env"])
    if job.get("cwd"):
        os.chdir(job["cwd"])
    if job.get("cgroup_procs"):
        with open(job["cgroup_procs"], "w") as fh:
            fh.write(str(os.getpid()))
    if job.get("rlimit"):
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (job["rlimit"], job["rlimit"]))
    if job.get("cpus"):
        os.sched_setaffinity(0, job["cpus"])
    fd = os.open(job["log_path"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # private, as the cold start's
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def run(line: str, started_in: str | None = None) -> int:
    """Run the job `line` describes; `started_in`: the directory this interpreter put first on sys.path when it
    started, which becomes the job's working directory, as for a process started there."""
    if not line.strip():
        return 0
    job = json.loads(line)
    _apply(job)
    if started_in is not None and job.get("cwd") and sys.path and sys.path[0] == started_in:
        sys.path[0] = job["cwd"]
    try:
        sys.stdin.close()
    except OSError:
        pass
    import conveyor.entrypoints.step_operator as entrypoint

    return entrypoint.main(job["argv"])
