"""ZenML's twin of `bench/workloads.py linear`: n-step chains start → inc → inc …, caching off, timed in process.

    ZENML_PYTHON bench/zenml/linear.py --sizes 1 10 50 [--repeat 3]

Prints one JSON object: {"times": {size: [seconds, ...]}, "median": {size: seconds}}, after one warm-up run of the
smallest size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from zenml import pipeline, step


@step
def start() -> int:
    """First step: a constant."""
    return 0


@step
def inc(x: int) -> int:
    """Every other step: the previous output + 1."""
    return x + 1


def linear_pipeline(n: int) -> Any:
    """An n-step chain, caching off."""

    @pipeline(name=f"bench_linear_{n}", enable_cache=False)
    def linear() -> None:
        x = start()
        for _ in range(n - 1):
            x = inc(x)

    return linear


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    pipelines = {n: linear_pipeline(n) for n in args.sizes}
    pipelines[min(args.sizes)]()
    times: dict[str, list[float]] = {str(n): [] for n in args.sizes}
    for _ in range(args.repeat):
        for n, p in pipelines.items():
            t0 = time.perf_counter()
            p()
            times[str(n)].append(time.perf_counter() - t0)
    json.dump({"times": times, "median": {n: statistics.median(ts) for n, ts in times.items()}}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
