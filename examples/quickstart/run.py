"""Quickstart: a small digits classifier whose training step runs on the `local` step operator.

    cd examples/quickstart && ../../.venv/bin/python run.py

Run it twice: the second run takes every step from the cache.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Keep this example's state in examples/quickstart/.conveyor unless told otherwise.
os.environ.setdefault("CONVEYOR_PROJECT_DIR", str(HERE))

from conveyor import Client, pipeline  # noqa: E402

from steps import evaluate, load_data, preprocess, train  # noqa: E402


@pipeline
def digits_pipeline(test_size: float = 0.25, c: float = 1.0) -> None:
    """load → preprocess → train (on the `local` step operator) → evaluate."""
    features, labels = load_data()
    x_train, x_test, y_train, y_test = preprocess(features, labels, test_size=test_size)
    coef, intercept, classes = train(x_train, y_train, c=c)
    evaluate(coef, intercept, classes, x_test, y_test)


def summarize(run_id: str) -> float:
    """Print each step's status, where it ran and how long it took; return the accuracy."""
    run = Client().get_pipeline_run(run_id)
    print(f"\nRun {run.name}: {run.status}")
    print(f"{'step':<12} {'status':<10} {'ran on':<12} {'duration':>9}")
    for name, s in run.steps.items():
        where = s.config.step_operator or "in-process"
        took = f"{s.duration.total_seconds():.2f}s" if s.duration is not None else "-"
        print(f"{name:<12} {s.status:<10} {where:<12} {took:>9}")
    accuracy = run.steps["evaluate"].outputs["accuracy"].load()
    print(f"\nTest accuracy: {accuracy:.3f}")
    return accuracy


def main() -> int:
    run = digits_pipeline()
    accuracy = summarize(run.id)
    return 0 if accuracy > 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
