"""The SDK as users write it: decorators, typed outputs, parameters, with_options, plain calls."""

from __future__ import annotations

from typing import Annotated

import pytest

from conveyor import Client, pipeline, step
from conveyor.config import ResourceSettings, StepRetryConfig
from conveyor.pipelines.compiler import Snapshot


@step
def produce() -> tuple[Annotated[int, "count"], Annotated[str, "label"]]:
    return 3, "three"


@step(name="repeat_label")
def repeat(label: str, count: int, sep: str = "-") -> str:
    return sep.join([label] * count)


@step
def no_output(text: str) -> None:
    print(text)


@pipeline(name="labels", enable_cache=False)
def label_pipeline(sep: str = "+"):
    count, label = produce()
    joined = repeat(label, count, sep=sep)
    no_output(joined)


def test_a_step_outside_a_pipeline_is_a_plain_function_call() -> None:
    assert produce() == (3, "three")
    assert repeat("a", 2) == "a-a"
    assert Client().list_pipeline_runs() == []


def test_named_tuple_outputs_parameters_and_pipeline_parameters() -> None:
    run = label_pipeline(sep="*")
    assert run.pipeline_name == "labels"
    assert run.status == "completed"
    assert list(run.steps) == ["produce", "repeat_label", "no_output"]
    assert run.steps["produce"].outputs["count"].load() == 3
    assert run.steps["produce"].outputs["label"].load() == "three"
    assert run.steps["repeat_label"].outputs["output"].load() == "three*three*three"
    assert run.steps["repeat_label"].config.parameters == {"sep": "*"}
    assert run.steps["no_output"].outputs == {}
    assert "three*three*three" in run.steps["no_output"].logs()
    assert run.duration is not None and all(s.duration is not None for s in run.steps.values())


def test_calling_a_pipeline_compiles_an_immutable_snapshot() -> None:
    snap = label_pipeline.compile(sep="/")
    assert isinstance(snap, Snapshot)
    assert snap.order == ("produce", "repeat_label", "no_output")
    assert snap.step_spec("repeat_label")["inputs"]["label"] == {"step": "produce", "output": "label"}
    with pytest.raises(TypeError):
        snap.spec["steps"]["produce"]["parameters"] = {}  # type: ignore[index]
    with pytest.raises(AttributeError):
        snap.spec_hash = "x"  # type: ignore[misc]
    assert label_pipeline.compile(sep="/").spec_hash == snap.spec_hash
    assert label_pipeline.compile(sep="|").spec_hash != snap.spec_hash


def test_invoking_a_step_twice_gets_distinct_names_and_id_overrides() -> None:
    @pipeline
    def twice():
        c, label = produce()
        repeat(label, c)
        repeat(label, c, id="second_repeat")
        repeat(label, c)

    snap = twice.compile()
    assert snap.order == ("produce", "repeat_label", "second_repeat", "repeat_label_2")


def test_with_options_copies_and_merges() -> None:
    base = step(settings={"resources": ResourceSettings(cpu_count=2)}, retry=StepRetryConfig(max_retries=1))(
        lambda: 1)
    changed = base.with_options(step_operator=True, settings={"resources": {"memory": "1GB"}}, timeout="2m",
                                retry={"max_retries": 3, "delay": 1, "backoff": 2})
    assert base.step_operator is None and base.timeout is None
    assert changed.step_operator is True
    assert changed.settings["resources"] == {"cpu_count": 2.0, "memory": "1GB"}
    assert changed.timeout == 120.0
    assert changed.retry == StepRetryConfig(max_retries=3, delay=1, backoff=2)


def test_pipeline_settings_merge_under_step_settings() -> None:
    @step(settings={"resources": {"memory": "2GB"}})
    def inner() -> int:
        return 1

    @pipeline(settings={"resources": ResourceSettings(cpu_count=4, memory="1GB")})
    def p():
        inner()

    run = p()
    rs = run.steps["inner"].config.resource_settings
    assert rs.cpu_count == 4 and rs.memory == "2GB"


def test_step_operator_true_means_the_stacks_first_step_operator() -> None:
    @step(step_operator=True)
    def somewhere() -> int:
        return 5

    @pipeline
    def p():
        somewhere()

    run = p()
    assert run.steps["somewhere"].config.step_operator == "local"
    assert run.steps["somewhere"].outputs["output"].load() == 5


def test_retries_rerun_a_failing_step(tmp_path) -> None:
    counter = tmp_path / "attempts"

    @step(retry=StepRetryConfig(max_retries=2, delay=0.05, backoff=2))
    def flaky() -> int:
        n = len(counter.read_text()) if counter.exists() else 0
        counter.write_text("x" * (n + 1))
        if n < 2:
            raise ConnectionError("transient")
        return n

    @pipeline
    def p():
        flaky()

    run = p()
    assert run.steps["flaky"].status == "completed"
    assert run.steps["flaky"].attempt == 3
    assert run.steps["flaky"].outputs["output"].load() == 2


def test_in_process_timeout_interrupts_a_python_loop() -> None:
    from conveyor.exceptions import RunFailedError

    @step(timeout=0.5)
    def spin() -> int:
        while True:
            pass

    @pipeline
    def p():
        spin()

    with pytest.raises(RunFailedError) as info:
        p()
    assert info.value.run.steps["spin"].failure_kind == "timeout"


def test_client_active_stack_is_the_default_stack() -> None:
    stack = Client().active_stack
    assert stack.name == "default"
    assert stack.orchestrator.flavor == "local"
    assert stack.artifact_store.flavor == "local"
    assert stack.step_operator_names == ["local"]
