"""Benchmark workloads, run in a fresh process by `bench/run.py` (or by hand, for profiling).

    python bench/workloads.py linear --sizes 1 50 [--operator local] [--repeat 3] [--warmup-sizes 1 10]
                                     [--profile out.pstats]
    python bench/workloads.py remote1 --operator hpc [--repeat 5] [--gaps 0.1 0.7 ...]

`linear` prints one JSON object: {"times": {size: [seconds, ...]}, "median": {size: seconds}}; one warm-up run of
each size first (of --warmup-sizes only, when given: a 1,000-step warm-up run costs as much as a measured one). `remote1` runs the
1-step chain on a step operator and in process, alternately (sleeping the next of --gaps, if given, before each
step operator run), and prints {"remote": [wall s], "inproc": [wall s], "step": [the step's recorded duration, s],
"submission": the last run's step submission}. Steps are defined at module level so that a step operator's
remote side can import them from this file's directory.
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


def time_linear(sizes: list[int], operator: str | None, repeat: int, warmup: bool = True,
                warmup_sizes: list[int] | None = None) -> dict[str, list[float]]:
    """Wall time of `repeat` runs of each size, measured inside this process after one warm-up run of each (of
    `warmup_sizes` when given)."""
    pipelines = {n: linear_pipeline(n, operator) for n in sizes}
    if warmup:
        for n in (sizes if warmup_sizes is None else warmup_sizes):
            (pipelines[n] if n in pipelines else linear_pipeline(n, operator))()
    times: dict[str, list[float]] = {str(n): [] for n in sizes}
    for _ in range(repeat):
        for n in sizes:
            t0 = time.perf_counter()
            run = pipelines[n]()
            times[str(n)].append(time.perf_counter() - t0)
            assert run.status == "completed", run.status
    return times


def time_remote_one_step(operator: str, repeat: int, gaps: list[float] | None = None) -> dict[str, Any]:
    """The 1-step chain on `operator` and in process, alternately, `repeat` times each after one warm-up run of each.

    Besides the wall time of each pipeline call, records the step's duration as the store has it (start to finish
    of the step run, which is what a user sees), and the last submission (for its job folder). `gaps`: seconds to
    sleep before each run on `operator` (cycled), to spread the submissions over a backend's scheduling period.
    """
    from conveyor import Client

    remote, inproc = linear_pipeline(1, operator), linear_pipeline(1, None)
    remote()
    inproc()
    out: dict[str, Any] = {"remote": [], "inproc": [], "step": [], "submission": None}
    for i in range(repeat):
        if gaps:
            time.sleep(gaps[i % len(gaps)])
        t0 = time.perf_counter()
        run = remote()
        out["remote"].append(time.perf_counter() - t0)
        assert run.status == "completed", run.status
        step_run = Client().get_pipeline_run(run.id).steps["start"]
        out["step"].append(step_run.duration.total_seconds())
        out["submission"] = step_run.submission
        t0 = time.perf_counter()
        run = inproc()
        out["inproc"].append(time.perf_counter() - t0)
        assert run.status == "completed", run.status
    return out


def main(argv: list[str] | None = None) -> int:
    # Imported here, not at module level: the `local` step operator's subprocess imports this module too.
    import argparse
    import json
    import statistics

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=["linear", "remote1"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--operator", default=None, help="step operator for every step (default: in-process)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup-sizes", type=int, nargs="*", default=None,
                        help="linear: warm up with these sizes only (default: every measured size)")
    parser.add_argument("--gaps", type=float, nargs="*", default=None,
                        help="remote1: seconds to sleep before each step operator run (cycled)")
    parser.add_argument("--profile", metavar="PATH", help="write cProfile stats of the timed runs to PATH")
    args = parser.parse_args(argv)
    if args.workload == "remote1":
        if not args.operator:
            parser.error("remote1 needs --operator")
        json.dump(time_remote_one_step(args.operator, args.repeat, args.gaps), sys.stdout)
        print()
        return 0
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
        times = time_linear(args.sizes, args.operator, args.repeat, warmup_sizes=args.warmup_sizes)
    medians = {n: statistics.median(ts) for n, ts in times.items()}
    json.dump({"times": times, "median": medians}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
