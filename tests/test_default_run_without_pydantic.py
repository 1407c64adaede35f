"""A pipeline on the default stack whose steps set no settings imports no pydantic (its import and model builds
were the largest fixed cost of a run); settings, step operators and a stored config gone bad work and read as
before, importing pydantic then."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from testkit import run_python

HEADER = textwrap.dedent("""
    import atexit, sys
    atexit.register(lambda: print("PYDANTIC", "pydantic" in sys.modules))
    from conveyor import pipeline, step
""")

ONE_STEP = HEADER + textwrap.dedent("""
    @step
    def one() -> int:
        return 1

    @pipeline(enable_cache=False)
    def single():
        one()

    run = single()
    print("RUN", run.status, run.steps["one"].outputs["output"].load())
""")

WITH_SETTINGS = HEADER + textwrap.dedent("""
    from conveyor import ResourceSettings

    @step(step_operator="local", settings={"resources": ResourceSettings(cpu_count=1, memory="1GiB")})
    def away() -> int:
        return 2

    @step
    def here(x: int) -> int:
        return x + 1

    @pipeline(enable_cache=False)
    def mixed():
        here(away())

    run = mixed()
    print("RUN", run.status, run.steps["here"].outputs["output"].load())
    print("RECORDED", run.steps["away"].config.resource_settings_json, run.steps["here"].config.resource_settings_json)
""")


def test_a_pipeline_on_the_default_stack_imports_no_pydantic(project: Path) -> None:
    run_python(ONE_STEP, project)  # creates the store and the default stack
    out = run_python(ONE_STEP, project).stdout
    assert "RUN completed 1" in out, out
    assert "PYDANTIC False" in out, out


def test_resources_and_a_local_step_operator_still_run_and_record_as_before(project: Path) -> None:
    out = run_python(WITH_SETTINGS, project).stdout
    assert "RUN completed 3" in out, out
    assert "PYDANTIC True" in out, out
    from conveyor.config.resources import ResourceSettings

    expected = ResourceSettings(cpu_count=1, memory="1GiB").model_dump(exclude_none=True)
    assert f"RECORDED {expected} {ResourceSettings().model_dump(exclude_none=True)}" in out, out


@pytest.mark.parametrize("type_, config, message", [
    ("artifact_store", {"path": "s3://bucket/x"},
     ("artifact_store 'default': path: the local artifact store takes a directory, not a URL ('s3://bucket/x'); "
      "use a remote artifact store flavor for URLs. Valid fields of LocalArtifactStoreConfig: path")),
    ("orchestrator", {"max_parallelism": 0},
     ("orchestrator 'default': max_parallelism: Input should be greater than or equal to 1. Valid fields of "
      "LocalOrchestratorConfig: max_parallelism, heartbeat_interval")),
])
def test_a_stored_config_edited_by_hand_into_an_invalid_one_is_refused_before_the_run_with_the_same_words(
        project: Path, type_: str, config: dict[str, object], message: str) -> None:
    from conveyor.context import get_context, reset_contexts

    run_python(ONE_STEP, project)
    get_context().store.update_component(type_, "default", config)  # no validation: as if edited in the database
    reset_contexts()
    proc = run_python(ONE_STEP, project, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert "RUN" not in proc.stdout, proc.stdout


def test_the_default_stack_reads_the_same_values_with_and_without_pydantic(project: Path) -> None:
    """The plain values a flavor vouches for are the model's: same defaults, same path; `.config` is the model."""
    from conveyor.artifact_stores.local.flavor import LocalArtifactStoreFlavor
    from conveyor.context import get_context
    from conveyor.orchestrators.local.flavor import LocalOrchestratorFlavor

    orchestrator, store = LocalOrchestratorFlavor(), LocalArtifactStoreFlavor()
    assert orchestrator.plain_config({}) == orchestrator.config_class().model_dump()
    assert orchestrator.plain_config({"max_parallelism": 2}) is None  # set values: the model validates them
    for path in ("~/artifacts", "rel/dir", "/abs/../dir"):
        assert store.plain_config({"path": path}) == {"path": store.config_class(path=path).path}
    stack = get_context().load_stack()
    for component, flavor in ((stack.orchestrator, orchestrator), (stack.artifact_store, store)):
        plain = {field: component.config_value(field) for field in flavor.config_class.model_fields}  # no model yet
        assert plain == component.config.model_dump(), component
        assert isinstance(component.config, flavor.config_class)
    assert stack.artifact_store.artifact_store().root == stack.artifact_store.config.path
