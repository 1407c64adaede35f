"""The smallest real Conveyor program: one trivial in-process step. `bench/run.py` times it as a whole process."""

from conveyor import pipeline, step


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
