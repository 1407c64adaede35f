"""Steps on the `local` step operator after the first: forked from a process that has Conveyor's remote side and SDK
imported (step_operators/local/forkserver.py), yet each step's process behaves as a fresh one."""

from __future__ import annotations

import sys

# module level, before this module imports Conveyor: in a warm step's process, what was imported before the step
SDK_READY_BEFORE_THE_STEP = all(m in sys.modules for m in ("conveyor.steps", "conveyor.pipelines.pipeline"))
PYDANTIC_OR_SQLALCHEMY = sorted(m for m in ("pydantic", "sqlalchemy") if m in sys.modules)

import atexit
import random
import threading
import time
from pathlib import Path
from typing import Annotated

from conveyor import pipeline, step


@step(step_operator="local")
def sdk_ready(previous: int) -> tuple[Annotated[int, "count"], Annotated[bool, "ready"], Annotated[list[str], "heavy"]]:
    return previous + 1, SDK_READY_BEFORE_THE_STEP, PYDANTIC_OR_SQLALCHEMY


@pipeline(enable_cache=False)
def three_warm_checks():
    count = 0
    for _ in range(3):  # one after the other: steps started together would all be cold in a fresh process
        count, _ready, _heavy = sdk_ready(count)


def test_a_warm_step_finds_conveyors_sdk_imported_and_neither_pydantic_nor_sqlalchemy() -> None:
    run = three_warm_checks()
    warm = [s for s in run.steps.values() if s.submission["data"].get("warm")]
    assert len(warm) >= 2, [s.submission["data"] for s in run.steps.values()]  # the first of a process may be cold
    for s in warm:
        assert s.outputs["ready"].load() is True, "the step's `from conveyor import step` was not imported ahead"
    for s in run.steps.values():
        assert s.outputs["heavy"].load() == []


@step(step_operator="local")
def leaves_work_for_the_exit(folder: str, tag: int, previous: float) -> float:
    """Ends with a thread still writing and an atexit handler: a process's ordinary exit waits for both."""
    out = Path(folder)

    def late_write() -> None:
        time.sleep(0.5)
        (out / f"thread-{tag}").write_text("done")

    threading.Thread(target=late_write).start()  # not a daemon: the interpreter joins it before exiting
    atexit.register(lambda: (out / f"atexit-{tag}").write_text("done"))
    return random.random()


def test_a_forked_step_process_exits_as_a_fresh_one_does_and_draws_its_own_random_numbers(tmp_path: Path) -> None:
    @pipeline(enable_cache=False)
    def exits():
        draw = 0.0
        for tag in range(3):
            draw = leaves_work_for_the_exit(str(tmp_path), tag, draw)

    run = exits()
    assert run.status == "completed"
    for tag in range(3):
        assert (tmp_path / f"thread-{tag}").read_text() == "done", "the step's thread was cut off at exit"
        assert (tmp_path / f"atexit-{tag}").read_text() == "done", "the step's atexit handler did not run"
    draws = [s.outputs["output"].load() for s in run.steps.values()]
    assert len(set(draws)) == len(draws), f"step processes share their random state: {draws}"
