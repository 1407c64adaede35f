"""`on_failure` / `on_success` hooks on steps and pipelines: they run where the step ran (in-process thread or the
step operator's process) with the step context at hand; what they log is recorded with the step."""

from __future__ import annotations

import pytest

from conveyor import get_step_context, log_metadata, pipeline, step
from conveyor.exceptions import RunFailedError


def record_failure(exception: BaseException) -> None:
    log_metadata({"hook": "failure", "error": f"{type(exception).__name__}: {exception}",
                  "step": get_step_context().step_name})


def record_success() -> None:
    log_metadata({"hook": "success", "step": get_step_context().step_name})


def pipeline_failure() -> None:  # ZenML's other accepted shape: no parameter
    log_metadata({"hook": "pipeline failure"})


def broken_hook() -> None:
    raise RuntimeError("the alerting service is down")


class Diverged(RuntimeError):
    pass


@step(on_success=record_success, on_failure=record_failure)
def ok_here() -> int:
    return 1


@step(step_operator="local", on_success=record_success, on_failure=record_failure)
def ok_remote() -> int:
    return 2


@step(on_failure=record_failure)
def fails_here() -> int:
    raise Diverged("loss is NaN")


@step(step_operator="local", on_failure=record_failure)
def fails_remote() -> int:
    raise Diverged("loss is NaN")


@step
def fails_plain() -> int:
    raise Diverged("no hook of its own")


@step(step_operator="local", on_success=broken_hook)
def ok_with_broken_hook() -> int:
    return 3


@step(on_failure=broken_hook)
def fails_with_broken_hook() -> int:
    raise Diverged("the step's own error")


@pipeline(enable_cache=False)
def succeeding():
    ok_here()
    ok_remote()


def test_success_hooks_run_with_the_step_context_on_both_sides() -> None:
    run = succeeding()
    for name in ("ok_here", "ok_remote"):
        assert run.steps[name].run_metadata == {"hook": "success", "step": name}


@pytest.mark.parametrize("target", [fails_here, fails_remote], ids=["in-process", "local"])
def test_the_failure_hook_gets_the_exception_where_the_step_ran(target) -> None:
    @pipeline(enable_cache=False)
    def failing():
        target()

    with pytest.raises(RunFailedError) as info:
        failing()
    step_run = info.value.run.steps[target.name]
    assert step_run.status == "failed" and "Diverged: loss is NaN" in step_run.error
    assert step_run.run_metadata == {"hook": "failure", "error": "Diverged: loss is NaN", "step": target.name}


def test_pipeline_hooks_apply_to_steps_without_their_own() -> None:
    @pipeline(enable_cache=False, on_failure=pipeline_failure)
    def failing():
        fails_plain()
        fails_here()

    with pytest.raises(RunFailedError) as info:
        failing()
    steps = info.value.run.steps
    assert steps["fails_plain"].run_metadata == {"hook": "pipeline failure"}
    assert steps["fails_here"].run_metadata["hook"] == "failure"  # its own hook wins


def test_with_options_sets_hooks_on_a_step_and_a_pipeline() -> None:
    @pipeline(enable_cache=False)
    def p():
        fails_plain.with_options(on_failure=record_failure)()

    with pytest.raises(RunFailedError) as info:
        p()
    assert info.value.run.steps["fails_plain"].run_metadata["hook"] == "failure"

    @pipeline(enable_cache=False)
    def q():
        ok_here.with_options(on_success=None, on_failure=None)()

    run = q.with_options(on_success=record_success)()
    assert run.steps["ok_here"].run_metadata == {"hook": "success", "step": "ok_here"}


def test_a_hook_that_raises_is_logged_and_leaves_the_outcome_alone() -> None:
    @pipeline(enable_cache=False)
    def p():
        ok_with_broken_hook()

    run = p()
    step_run = run.steps["ok_with_broken_hook"]
    assert step_run.status == "completed" and step_run.outputs["output"].load() == 3
    assert "the on_success hook broken_hook raised RuntimeError: the alerting service is down" in step_run.logs()

    @pipeline(enable_cache=False)
    def q():
        fails_with_broken_hook()

    with pytest.raises(RunFailedError) as info:
        q()
    failed = info.value.run.steps["fails_with_broken_hook"]
    assert "Diverged: the step's own error" in failed.error
    assert "the on_failure hook broken_hook raised RuntimeError" in failed.logs()


def test_hooks_with_the_wrong_signature_are_refused_when_declared() -> None:
    def two(a, b):
        pass

    with pytest.raises(TypeError, match="an on_failure hook takes no arguments, or one: the exception"):
        step(on_failure=two)(lambda: 1)
    with pytest.raises(TypeError, match="on_success hook 'record_failure' takes exception; an on_success hook takes no"):
        step(on_success=record_failure)(lambda: 1)
    with pytest.raises(TypeError, match="on_failure must be a function"):
        pipeline(on_failure=42)(lambda: None)


def test_a_scripts_hooks_reach_the_step_operator(project, tmp_path) -> None:
    import subprocess
    import sys
    import textwrap

    script = project / "train.py"
    script.write_text(textwrap.dedent('''
        from conveyor import Client, get_step_context, log_metadata, pipeline, step

        def notify(exception: BaseException) -> None:
            log_metadata({"failed_in": get_step_context().step_name, "error": str(exception)})

        def celebrate() -> None:
            log_metadata({"celebrated": get_step_context().pipeline.name})

        @step(step_operator="local")
        def train() -> int:
            return 1

        @step(step_operator="local")
        def evaluate(x: int) -> int:
            raise ValueError(f"bad model {x}")

        @pipeline(on_failure=notify, on_success=celebrate, enable_cache=False)
        def training():
            evaluate(train())

        if __name__ == "__main__":
            try:
                training()
            except Exception:
                pass
            run = Client().list_pipeline_runs()[0]
            run = Client().get_pipeline_run(run.id)
            print("METADATA", run.steps["train"].run_metadata, run.steps["evaluate"].run_metadata)
    '''))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=project, timeout=120)
    assert out.returncode == 0, out.stderr
    assert ("METADATA {'celebrated': 'training'} {'error': 'bad model 1', 'failed_in': 'evaluate'}" in out.stdout), out.stdout
