"""The dashboard's resume: `Client.resume_run` in a process of its own, as `conveyor run resume` runs in a shell.

A resume runs the run's remaining steps for as long as they take and owns the run while it does: it must not live
in the web server's threads (a server restart would abandon it), so it is a detached process whose output goes to
`.conveyor/dashboard/resume-<run id>.log`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor.context import Context

__all__ = ["log_path", "start_resume"]


def log_path(ctx: "Context", run_id: str) -> Path:
    return ctx.dir / "dashboard" / f"resume-{run_id}.log"


def start_resume(ctx: "Context", run_id: str) -> int:
    """Start resuming `run_id` in the background (from this server's working directory, where its pipeline's
    modules are importable, as for `conveyor run resume`); its pid."""
    log = log_path(ctx, run_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CONVEYOR_PROJECT_DIR": str(ctx.root), "CONVEYOR_STORE_URL": ctx.store_url}
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "conveyor.dashboard.resume", run_id], cwd=os.getcwd(), env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return proc.pid


def main(run_id: str) -> int:
    from conveyor.client import Client
    from conveyor.exceptions import ConveyorError

    sys.path.insert(0, os.getcwd())  # the pipeline's modules, as when the user ran it from here
    try:
        run = Client().resume_run(run_id)
    except ConveyorError as err:
        print(f"resume of run {run_id} failed: {err}", file=sys.stderr)
        return 1
    print(f"run {run.name} is {run.status}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
