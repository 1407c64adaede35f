"""A pre-started step process: it imports Conveyor's remote side ahead of time, then waits for one job.

The local step operator keeps one of these spare, so a step pays only for importing its own code. The job
arrives as one JSON line on stdin; the worker applies the step's environment and limits to itself before any of
the step's code is imported, then runs the ordinary entrypoint. EOF on stdin (the orchestrator is gone) ends it.
"""

from __future__ import annotations

import json
import os
import sys


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


def main() -> int:
    import conveyor.artifacts.materializers  # noqa: F401 - the point of a warm worker
    import conveyor.entrypoints.step_operator as entrypoint
    import conveyor.execution.runner  # noqa: F401
    import conveyor.pipelines.source  # noqa: F401

    line = sys.stdin.readline()
    if not line.strip():
        return 0
    job = json.loads(line)
    _apply(job)
    sys.stdin.close()
    return entrypoint.main(job["argv"])


if __name__ == "__main__":
    from conveyor.entrypoints.step_operator import exit_with

    exit_with(main())
