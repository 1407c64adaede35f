"""The local orchestrator: concurrency, caching, skipping downstream of failures."""

from __future__ import annotations

import time

import pytest
from steps_lib import executions, sleeper, touch_counter

from conveyor import pipeline, step
from conveyor.exceptions import RunFailedError


@step
def start() -> float:
    return 0.5


@step
def join(a: float, b: float, c: float, d: float, e: float, f: float, g: float, h: float) -> float:
    return max(a, b, c, d, e, f, g, h)


def _fan_out(sleep_step):
    @pipeline(enable_cache=False)
    def fan():
        s = start()
        outs = [sleep_step(s, tag=i) for i in range(8)]
        join(*outs)

    return fan


def max_overlap(step_runs) -> int:
    """How many of these steps were running at the same instant, from their recorded start and end times
    (not wall-clock bounds, which a loaded machine breaks)."""
    events = sorted([(s.start_time, 1) for s in step_runs] + [(s.end_time, -1) for s in step_runs],
                    key=lambda e: (e[0], e[1]))
    running = most = 0
    for _, delta in events:
        running += delta
        most = max(most, running)
    return most


def test_fan_out_runs_eight_in_process_steps_concurrently() -> None:
    run = _fan_out(sleeper)()
    assert run.status == "completed" and len(run.steps) == 10
    most = max_overlap([s for s in run.steps.values() if s.name.startswith("sleeper")])
    assert most == 8, f"at most {most} of the 8 x 0.5 s steps ran at once: not concurrent"


def test_fan_out_runs_eight_local_operator_steps_concurrently() -> None:
    @step(step_operator="local")
    def two_seconds(x: float, tag: int) -> float:
        time.sleep(2)
        return time.time()

    run = _fan_out(two_seconds)()
    assert run.status == "completed"
    most = max_overlap([s for s in run.steps.values() if s.name.startswith("two_seconds")])
    assert most == 8, f"at most {most} of the 8 x 2 s steps ran at once: not concurrent"
    ends = sorted(run.steps[f"two_seconds{'' if i == 0 else f'_{i + 1}'}"].outputs["output"].load() for i in range(8))
    assert ends[-1] - ends[0] < 4


def test_identical_second_run_executes_nothing(tmp_path) -> None:
    log = str(tmp_path / "executions")

    @pipeline
    def p(x: int = 1):
        touch_counter(log, touch_counter(log, x))

    first = p()
    assert executions(log) == 2
    second = p()
    assert executions(log) == 2
    assert [s.status for s in second.steps.values()] == ["cached", "cached"]
    assert second.steps["touch_counter_2"].outputs["output"].load() == 1
    assert second.steps["touch_counter"].cached_from == first.steps["touch_counter"].id


def test_changing_one_input_reruns_only_what_depends_on_it(tmp_path) -> None:
    log_a, log_b, log_c, log_d = (str(tmp_path / n) for n in "abcd")

    @step
    def add(x: int, y: int) -> int:
        return x + y

    @pipeline
    def p(x: int):
        a = touch_counter(log_a, x)
        b = touch_counter(log_b, a, id="b")
        c = touch_counter(log_c, 100, id="c")
        touch_counter(log_d, add(b, c), id="d")

    p(x=1)
    run = p(x=2)
    statuses = {n: s.status for n, s in run.steps.items()}
    assert statuses == {"touch_counter": "completed", "b": "completed", "c": "cached", "add": "completed",
                        "d": "completed"}
    assert [executions(p_) for p_ in (log_a, log_b, log_c, log_d)] == [2, 2, 1, 2]
    assert run.steps["d"].outputs["output"].load() == 102


def test_cache_hit_touches_no_step_operator(tmp_path, step_operator) -> None:
    step_operator("never", "fault", fault="submit")
    log = str(tmp_path / "n")

    @pipeline
    def p():
        touch_counter(log, 7)

    p()
    run = p.with_options()()
    assert run.steps["touch_counter"].status == "cached"

    @pipeline(name="p")
    def p2():
        touch_counter.with_options(step_operator="never")(log, 7)

    cached = p2()
    assert cached.steps["touch_counter"].status == "cached"  # the refusing operator was never asked


def test_downstream_of_a_failure_is_skipped() -> None:
    @step
    def bad() -> int:
        raise ValueError("no")

    @step
    def after(x: int) -> int:
        return x

    @step
    def independent() -> int:
        return 1

    @pipeline
    def p():
        after(bad())
        independent()

    with pytest.raises(RunFailedError) as info:
        p()
    steps = info.value.run.steps
    assert steps["bad"].status == "failed"
    assert steps["after"].status == "skipped"
    assert steps["independent"].status == "completed"
    assert info.value.run.status == "failed"
