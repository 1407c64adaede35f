"""Each failure the `fault` flavor injects ends as a failed step with a clear reason and a consistent store."""

from __future__ import annotations

import time

import pytest
from steps_lib import make_numbers

from conveyor import Client, pipeline, step
from conveyor.exceptions import RunFailedError
from testkit import assert_nothing_left


@step
def compute(numbers: list[int]) -> int:
    return sum(numbers)


def _run(operator: str, **options):
    @pipeline(enable_cache=False)
    def faulty():
        compute.with_options(step_operator=operator, **options)(make_numbers(3))

    return faulty


def _assert_consistent(run, failed_step: str = "compute") -> None:
    final = Client().get_pipeline_run(run.id)
    assert final.status == "failed"
    assert final.steps["make_numbers"].status == "completed"
    assert final.steps[failed_step].status == "failed"
    assert final.steps[failed_step].end_time is not None
    assert final.steps[failed_step].outputs == {}
    assert_nothing_left(final.steps[failed_step])


CASES = {
    "submit": ({"fault": "submit"}, {}, "submit", "refused the submission"),
    "mid_run": ({"fault": "mid_run", "fault_after": 0.3}, {}, "crash", "fault injected: job failed"),
    "lose": ({"fault": "lose", "fault_after": 0.2, "infrastructure_retries": 1}, {}, "infrastructure", "job lost"),
    "preempt": ({"fault": "preempt", "fault_after": 0.2, "infrastructure_retries": 0}, {}, "infrastructure", "preempted"),
    "exit_code": ({"fault": "exit_code", "exit_code": 7}, {}, "crash", "exit code 7"),
    "hang": ({"fault": "hang"}, {"timeout": 1}, "timeout", "timed out after 1s"),
    "stuck_pending": ({"fault": "stuck_pending", "pending_timeout": "1s"}, {}, "pending", "pending timeout"),
    # hostile input: the files the two sides exchange, damaged in between
    "truncated_job_spec": ({"fault": "truncated_job_spec"}, {}, "job_spec", "is not valid JSON"),
    "foreign_job_spec": ({"fault": "foreign_job_spec"}, {}, "job_spec",
                         "has version 99, this Conveyor reads version 1: install the same Conveyor version"),
    "truncated_result": ({"fault": "truncated_result"}, {}, "result", "probably killed while writing it"),
    "foreign_result": ({"fault": "foreign_result"}, {}, "result", "unknown format or version 99"),
}


@pytest.mark.parametrize("mode", list(CASES))
def test_injected_failure_fails_the_step_clearly(mode: str, step_operator) -> None:
    config, options, kind, message = CASES[mode]
    step_operator("faulty", "fault", **config)
    started = time.monotonic()
    with pytest.raises(RunFailedError) as info:
        _run("faulty", **options)()
    assert time.monotonic() - started < 30, "a failure must end the run promptly, never hang it"
    step_run = info.value.run.steps["compute"]
    assert step_run.failure_kind == kind, step_run.error
    assert message in step_run.error
    assert message in str(info.value)
    _assert_consistent(info.value.run)
    if mode == "lose":
        assert step_run.attempt == 2  # re-submitted once under the infrastructure budget


def test_a_lost_job_is_resubmitted_and_then_succeeds(step_operator) -> None:
    step_operator("flaky_infra", "fault", fault="lose", fault_after=0.1, fault_attempts=1)
    run = _run("flaky_infra")()
    step_run = run.steps["compute"]
    assert step_run.status == "completed" and step_run.attempt == 2
    assert step_run.outputs["output"].load() == 3


def test_per_step_settings_override_the_fault(step_operator) -> None:
    step_operator("faulty", "fault", fault="submit")
    run = _run("faulty", settings={"step_operator.fault": {"fault": "none"}})()
    assert run.steps["compute"].outputs["output"].load() == 3

