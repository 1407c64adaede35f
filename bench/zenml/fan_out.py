"""ZenML's twin of bench/fan_out.py: one step feeding N independent steps (each sleeping --sleep seconds), caching
off, on the active stack (a new repository's default: the local orchestrator)."""

import argparse
import time

from zenml import pipeline, step

SLEEP = 0.0


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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("n", type=int)
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()
    SLEEP = args.sleep

    @pipeline(name=f"bench_fan_out_{args.n}", enable_cache=False)
    def fan() -> None:
        x = root()
        for _ in range(args.n):
            leaf(x)

    fan()
