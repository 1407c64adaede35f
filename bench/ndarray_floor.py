"""The machine's floor under the ndarray hand-off row: what the same work costs with no Conveyor at all.

    python bench/ndarray_floor.py [--gib 1]

Fills a float64 array of that size (as the hand-off's `make()` does), writes it to a file in the temporary
directory with one write from its buffer, maps the file copy-on-write and sums it (as `use()` does), removes the
file, and prints one JSON line {"seconds": ..., "array_bytes": ...}. No hashing, manifest, or process: a hand-off
that persists its artifact cannot take less on the same machine at the same moment. `bench/run.py` samples it next
to each hand-off, because on a virtual machine touching fresh memory (the array, then the file's page cache) costs
from ~0.15 s to over 3 s per GiB depending on how recently the host gave that memory back.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0)
    args = parser.parse_args()
    n = int(args.gib * 2**30) // 8
    fd, path = tempfile.mkstemp(suffix=".npy")
    try:
        t0 = time.perf_counter()
        array = np.ones(n)
        with os.fdopen(fd, "wb") as fh:
            fh.write(memoryview(array).cast("B"))
        del array
        mapped = np.memmap(path, dtype=np.float64, mode="c")
        total = float(mapped.sum())
        seconds = time.perf_counter() - t0
        del mapped
    finally:
        os.remove(path)
    assert total == n, total
    print(json.dumps({"seconds": seconds, "array_bytes": n * 8}))


if __name__ == "__main__":
    main()
