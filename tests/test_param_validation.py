"""Step parameters checked against the type hints at compile time; outputs against the return annotation after the
step ran and before anything is stored, in-process and on the remote side (the `local` step operator)."""

from __future__ import annotations

import subprocess
import sys
from typing import Annotated, Optional

import numpy as np
import pytest

from conveyor import Client, pipeline, step
from conveyor.exceptions import PipelineDefinitionError, RunFailedError


@step
def scaled(values: list[int], scale: float, label: Optional[str] = None, shape: tuple[int, int] = (1, 1)) -> list[float]:
    return [v * scale for v in values]


@step
def numbers() -> list[int]:
    return [1, 2, 3]


def test_a_parameter_of_the_wrong_type_is_refused_at_compile_time_naming_pipeline_step_parameter_and_type() -> None:
    @pipeline
    def bad_scale() -> None:
        scaled(numbers(), scale="not-a-float")

    with pytest.raises(PipelineDefinitionError) as err:
        bad_scale()
    text = str(err.value)
    for part in ("pipeline 'bad_scale'", "step 'scaled'", "parameter 'scale'", "expects float", "'not-a-float'"):
        assert part in text
    assert Client().list_pipeline_runs() == []  # nothing ran, nothing was recorded

    @pipeline
    def bad_optional() -> None:
        scaled(numbers(), scale=1, label=3)

    with pytest.raises(PipelineDefinitionError, match=r"parameter 'label' expects Optional\[str\], got int 3"):
        bad_optional()


def test_values_pydantic_accepts_are_kept_coerced_and_an_int_is_fine_for_a_float() -> None:
    @pipeline
    def coerced() -> None:
        scaled(numbers(), scale=2, shape=[2, 3])

    run = coerced()
    params = run.steps["scaled"].config.parameters
    assert params["scale"] == 2 and params["shape"] == [2, 3]
    assert run.steps["scaled"].outputs["output"].load() == [2, 4, 6]

    @pipeline
    def from_string() -> None:
        scaled(numbers(), scale="1.5")

    assert from_string().steps["scaled"].config.parameters["scale"] == 1.5  # ZenML-style coercion, as a float


def test_pipeline_parameters_are_checked_too() -> None:
    @pipeline
    def sized(size: int = 3) -> None:
        scaled(numbers(), scale=1.0)

    with pytest.raises(PipelineDefinitionError, match=r"pipeline 'sized': parameter 'size' expects int, got str 'big'"):
        sized(size="big")


@step
def says_int() -> int:
    return "forty-two"  # type: ignore[return-value]


@step
def pair() -> tuple[Annotated[int, "count"], Annotated[list[int], "items"]]:
    return 2, [1, "two"]  # type: ignore[list-item]


@step
def numpy_numbers() -> tuple[Annotated[float, "mean"], Annotated[int, "argmax"], Annotated[float, "small"]]:
    data = np.array([1.0, 3.0, 2.0])
    return data.mean(), data.argmax(), np.float32(0.5)


@pytest.mark.parametrize("where", ["in-process", "local"])
def test_an_output_that_does_not_fit_its_annotation_fails_the_step_before_it_is_stored(where: str, step_operator) -> None:
    if where == "local":
        step_operator("sub", "local")
    options = {"step_operator": "sub"} if where == "local" else {}

    @pipeline
    def wrong_output() -> None:
        says_int.with_options(**options)()

    with pytest.raises(RunFailedError) as err:
        wrong_output()
    failed = err.value.run.steps["says_int"]
    assert failed.status == "failed"
    assert ("step 'says_int' output 'output' is declared int but the step returned str 'forty-two'"
            in failed.error)
    assert failed.outputs == {}
    run_dir = Client().active_stack.artifact_store.artifact_store().join("runs", err.value.run.id)
    assert not list(_files_named("output", run_dir))  # nothing was saved under the run

    @pipeline
    def wrong_element() -> None:
        pair.with_options(**options)()

    with pytest.raises(RunFailedError) as err:
        wrong_element()
    assert ("output 'items' is declared list[int] but the step returned list whose element [1] is str 'two'"
            in err.value.run.steps["pair"].error)


def _files_named(name: str, root: str) -> list[str]:
    import os

    return [os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files if n == name]


def test_numpy_scalars_fit_float_and_int_annotations() -> None:
    @pipeline
    def stats() -> None:
        numpy_numbers()

    outputs = stats().steps["numpy_numbers"].outputs
    assert outputs["mean"].load() == 2.0 and outputs["argmax"].load() == 1 and outputs["small"].load() == 0.5


def test_the_output_checker_is_free_of_pydantic_for_the_remote_side() -> None:
    code = ("import sys, conveyor.steps.type_checks, conveyor.execution.runner; "
            "print(sorted(m for m in ('pydantic', 'sqlalchemy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
