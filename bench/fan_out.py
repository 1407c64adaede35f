"""One step feeding N independent steps, run as a whole process by `bench/run.py` (issue 15).

    python bench/fan_out.py N [--sleep SECONDS]

`root()` returns 0; each of the N `leaf` steps takes it as input, sleeps --sleep seconds (default 0: a trivial step)
and returns it + 1. With --sleep 1 and N = 20 this is "20 × 1 s sleeping steps in parallel": nothing between the
leaves, so a scheduler that runs every ready step at once finishes in about one second. Caching off.
"""

import sys
import time
from typing import Any

from conveyor import pipeline, step

SLEEP = 0.0  # set from --sleep before the pipeline runs (steps run in this process)


@step
def root() -> int:
    """The shared input."""
    return 0


@step
def leaf(x: int) -> int:
    """One independent step: sleep, then x + 1."""
    if SLEEP:
        time.sleep(SLEEP)
    return x + 1


def fan_out(n: int) -> Any:
    """root → n leaves."""

    @pipeline(name=f"bench_fan_out_{n}", enable_cache=False)
    def fan() -> None:
        x = root()
        for _ in range(n):
            leaf(x)

    return fan


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", type=int)
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()
    SLEEP = args.sleep
    run = fan_out(args.n)()
    sys.exit(0 if run.status == "completed" else 1)
