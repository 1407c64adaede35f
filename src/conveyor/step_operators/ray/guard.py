"""`python -m conveyor.step_operators.ray.guard MARKER -- COMMAND...`: run COMMAND unless the job was cancelled.

Ray cannot stop a job that is still pending: the stop reaches the job's supervisor only once it is placed, and the
entrypoint then still starts. So cancel() drops MARKER (a file beside the attempt's job spec) before it asks Ray to
stop the job, and this guard, the first thing the job runs, exits without starting the step when it finds it.
Otherwise it replaces itself with COMMAND (same pid, same command line markers). Imports nothing heavy.
"""

from __future__ import annotations

import os
import sys

CANCELLED_EXIT = 3


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m conveyor.step_operators.ray.guard MARKER -- COMMAND...", file=sys.stderr)
        return 2
    marker, command = argv[0], argv[2:]
    if os.path.exists(marker):
        print(f"conveyor: this job was cancelled before Ray could start it ({marker}); not running the step",
              flush=True)
        return CANCELLED_EXIT
    os.execvp(command[0], command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
