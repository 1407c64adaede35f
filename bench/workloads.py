"""Benchmark workloads, run in a fresh process by `bench/run.py` (or by hand, for profiling).

    python bench/workloads.py linear --sizes 1 50 [--operator local] [--repeat 3] [--profile out.pstats]

Prints one JSON object: {"times": {size: [seconds, ...]}}. Steps are defined at module level so that
the `local` step operator's subprocess can import them from this file's directory.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from conveyor import pipeline, step


@step
def start() -> int:
    """First step: a constant."""
    return 0


@step
def inc(x: int) -> int:
    """Every other step: the previous output + 1."""
    return x + 1


def linear_pipeline(n: int, operator: str | None) -> Any:
    """An n-step chain start → inc → inc …, with caching off; every step on `operator` when given."""
    first = start.with_options(step_operator=operator) if operator else start
    nxt = inc.with_options(step_operator=operator) if operator else inc

    @pipeline(name=f"bench_linear_{n}_{operator or 'inproc'}", enable_cache=False)
    def linear() -> None:
        x = first()
        for _ in range(n - 1):
            x = nxt(x)

    return linear


def time_linear(sizes: list[int], operator: str | None, repeat: int, warmup: bool = True) -> dict[str, list[float]]:
    """Wall time of `repeat` runs of each size, measured inside this process after one warm-up run of each."""
    pipelines = {n: linear_pipeline(n, operator) for n in sizes}
    if warmup:
        for n in sizes:
            pipelines[n]()
    times: dict[str, list[float]] = {str(n): [] for n in sizes}
    for _ in range(repeat):
        for n in sizes:
            t0 = time.perf_counter()
            run = pipelines[n]()
            times[str(n)].append(time.perf_counter() - t0)
            assert run.status == "completed", run.status
    return times


def main(argv: list[str] | None = None) -> int:
    # Imported here, not at module level: the `local` step operator's subprocess imports this module too.
    import argparse
    import json
    import statistics

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=["linear"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--operator", default=None, help="step operator for every step (default: in-process)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", metavar="PATH", help="write cProfile stats of the timed runs to PATH")
    args = parser.parse_args(argv)
    if args.profile:
        import cProfile

        pipelines = {n: linear_pipeline(n, args.operator) for n in args.sizes}
        for p in pipelines.values():
            p()
        profiler = cProfile.Profile()
        profiler.enable()
        times = time_linear(args.sizes, args.operator, args.repeat, warmup=False)
        profiler.disable()
        profiler.dump_stats(args.profile)
    else:
        times = time_linear(args.sizes, args.operator, args.repeat)
    medians = {n: statistics.median(ts) for n, ts in times.items()}
    json.dump({"times": times, "median": medians}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
