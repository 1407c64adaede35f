"""`get_step_context()`: the same answers in-process and in a step operator's process; a clear error outside."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conveyor import get_step_context, log_metadata, pipeline, step
from conveyor.steps.context import StepContextError


def _seen() -> dict:
    c = get_step_context()
    return {"pipeline": c.pipeline.name, "run_name": c.pipeline_run.name, "run_id": c.pipeline_run.id,
            "step_run_name": c.step_run.name, "step_run_id": c.step_run.id, "step_name": c.step_name,
            "attempt": c.attempt, "uri": c.get_output_artifact_uri(), "uris": c.output_artifact_uris}


@step
def seen_here() -> dict:
    return _seen()


@step(step_operator="local")
def seen_remote() -> dict:
    return _seen()


@step(retry={"max_retries": 1, "delay": 0})
def seen_on_retry(counter: str) -> int:
    path = Path(counter)
    path.write_text(path.read_text() + "x" if path.exists() else "x")
    if len(path.read_text()) < 2:
        raise ConnectionError("first attempt fails")
    return get_step_context().attempt


@pipeline(enable_cache=False)
def context_pipeline():
    seen_here()
    seen_remote()


@pytest.mark.parametrize("name", ["seen_here", "seen_remote"])
def test_the_context_names_the_pipeline_run_step_and_outputs(name: str) -> None:
    run = context_pipeline()
    step_run = run.steps[name]
    seen = step_run.outputs["output"].load()
    assert seen["pipeline"] == "context_pipeline"
    assert (seen["run_name"], seen["run_id"]) == (run.name, run.id)
    assert seen["step_name"] == seen["step_run_name"] == name
    assert seen["step_run_id"] == step_run.id
    assert seen["attempt"] == 1
    assert seen["uri"] == step_run.outputs["output"].uri
    assert seen["uris"] == {"output": step_run.outputs["output"].uri}


def test_attempt_counts_the_retries(tmp_path: Path) -> None:
    @pipeline(enable_cache=False)
    def retried():
        seen_on_retry(str(tmp_path / "counter"))

    run = retried()
    assert run.steps["seen_on_retry"].outputs["output"].load() == 2


def test_outside_a_step_the_in_step_functions_say_so() -> None:
    with pytest.raises(StepContextError, match=r"get_step_context\(\) works only inside a running step"):
        get_step_context()
    with pytest.raises(ValueError, match="outside a step needs a target"):
        log_metadata({"accuracy": 0.9})


def test_the_step_side_imports_neither_pydantic_nor_sqlalchemy() -> None:
    code = ("import sys\n"
            "import conveyor.entrypoints.step_operator, conveyor.steps.context, conveyor.steps.hooks\n"
            "import conveyor.artifacts.registry, conveyor.metadata, conveyor.execution.runner\n"
            "from conveyor import get_step_context, log_metadata, save_artifact, load_artifact\n"
            "print(sorted(m for m in ('pydantic', 'sqlalchemy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
