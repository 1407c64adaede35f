"""A large float64 ndarray handed from one step to the next: the artifact path at its floor (issue 15).

    python bench/ndarray_handoff.py [--gib 1] [--operator local]

`make()` builds the array (`np.arange`: every page written, content that is not all zeros) and returns it; `use()`
takes it as its input and returns `float(x.sum())`. The sum reads every element, so the wall time includes
faulting in every page of the input's memory map: a consumer that only touched a few pages (`x[::4096]`) would hide
a slow load behind the lazy map. In process by default; with `--operator local` both steps run on a `local` step
operator, the one a new project's default stack has: this script makes a temporary project of its own
(CONVEYOR_PROJECT_DIR) and removes it at the end.

Prints one JSON line: {"seconds": wall time of the pipeline call (after a first run with a 1,024-element array,
which creates the project's store and warms the operator), "peak_rss_bytes": the largest peak RSS (ru_maxrss) of
this process, its largest waited-for child and the run's step processes (each reports its own in result.json),
"array_bytes": the array's size, "operator": ..., "sum_ok": whether use() saw the array}.

The hand-off touches 2 GiB of fresh memory per GiB of array: the array, then the page cache of its file (the next
step maps those same pages). On the virtual machine of issue 15 that first touch cost from ~0.15 s/GiB to over
3 s/GiB (likely the host taking back the guest's memory a few seconds after it is freed): with the same code, runs
started a few seconds apart measured ~6 s in process, back-to-back runs ~1 s. Compare figures taken alike.

Steps are defined at module level so that the `local` operator's step process can import them from this file.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from conveyor import pipeline, step


@step
def make(elements: int) -> np.ndarray:
    """The array: 0, 1, 2, ... as float64."""
    return np.arange(elements, dtype=np.float64)


@step
def use(x: np.ndarray) -> float:
    """Read every element."""
    return float(x.sum())


def handoff(operator: str | None, elements: int) -> Any:
    """make → use of an array of `elements` float64, caching off, both steps on `operator` when given."""
    first = make.with_options(step_operator=operator) if operator else make
    second = use.with_options(step_operator=operator) if operator else use

    @pipeline(name=f"bench_ndarray_handoff_{operator or 'inproc'}", enable_cache=False)
    def ndarray_handoff() -> None:
        second(first(elements))

    return ndarray_handoff


def _peak_rss(run: Any) -> int:
    """The largest peak RSS of this process, its waited-for children, and the run's step processes.

    A step process is not always this process's child (the `local` operator may fork it from a server process it
    started), so RUSAGE_CHILDREN may miss it: each step process reports its own peak in its `result.json`.
    """
    import glob
    import json
    import resource

    from conveyor import Client

    # Linux reports ru_maxrss in KiB; RUSAGE_CHILDREN is the largest terminated (and waited-for) descendant
    peaks = [resource.getrusage(who).ru_maxrss * 1024 for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    root = Client().active_stack.artifact_store.artifact_store().root
    for path in glob.glob(os.path.join(root, "runs", run.id, "steps", "*", "attempt-*", "result.json")):
        with open(path) as fh:
            peaks.append(json.load(fh).get("peak_memory_bytes") or 0)
    return max(peaks)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import shutil
    import tempfile
    import time

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0, help="size of the array in GiB (default 1)")
    parser.add_argument("--operator", choices=["local"], default=None, help="run both steps on a `local` step operator")
    args = parser.parse_args(argv)
    elements = int(args.gib * (1 << 30)) // 8
    project = tempfile.mkdtemp(prefix="conveyor-ndarray-")
    os.environ["CONVEYOR_PROJECT_DIR"] = project
    os.environ.setdefault("CONVEYOR_QUIET", "1")
    try:
        # a new project's default stack has the `local` step operator; a first run with a small array creates the
        # project's store and warms the operator, so the timed run measures the hand-off
        handoff(args.operator, 1024)()
        t0 = time.perf_counter()
        run = handoff(args.operator, elements)()
        seconds = time.perf_counter() - t0
        assert run.status == "completed", run.status
        total = float(run.steps["use"].outputs["output"].load())
        expected = elements * (elements - 1) / 2
        sum_ok = abs(total - expected) <= 1e-9 * expected
        print(json.dumps({"seconds": round(seconds, 4), "peak_rss_bytes": _peak_rss(run), "array_bytes": elements * 8,
                          "operator": args.operator or "in-process", "sum_ok": sum_ok}))
    finally:
        shutil.rmtree(project, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
