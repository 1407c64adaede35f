"""ZenML's twin of bench/one_step.py: one trivial step, caching off. `bench/run.py` times it as a whole process with
the interpreter ZENML_PYTHON names."""

from zenml import pipeline, step


@step
def hello() -> int:
    """A trivial step."""
    return 1


@pipeline(enable_cache=False)
def one_step() -> None:
    """One step, no cache."""
    hello()


if __name__ == "__main__":
    one_step()
