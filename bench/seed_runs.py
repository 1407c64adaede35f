"""Fill the current project's store with N finished runs, fast, for the `conveyor run list` row (issue 15).

    python bench/seed_runs.py 10000

Runs bench/one_step.py's pipeline once for real, then records N - 1 copies of that run (same pipeline, snapshot,
stack, start and end time; one step run each) through the store's public methods `create_run` and `update_run`, in
the same process. Never SQL against the schema: the store's internals may change, those methods' signatures stay.
"""

import sys

from one_step import one_step

from conveyor.context import get_context


def seed(n: int) -> None:
    """One real run, then n - 1 recorded copies of it."""
    real = one_step()
    store = get_context().store
    row = next(r for r in store.list_runs(limit=5) if r["id"] == real.id)
    for i in range(1, n):
        run_id, _steps = store.create_run(name=f"{row['name']}-{i}", pipeline_id=row["pipeline_id"],
                                          snapshot_id=row["snapshot_id"], stack_name=row["stack_name"], host="bench",
                                          pid=0, steps=[("hello", {}, None, None)])
        store.update_run(run_id, status=row["status"], start_time=row["start_time"], end_time=row["end_time"])


if __name__ == "__main__":
    seed(int(sys.argv[1]))
