"""Bad input gets a clear error that says what to do, and leaves the store as it was."""

from __future__ import annotations

import pytest

from conveyor import Client, pipeline, step
from conveyor.config import ResourceSettings
from conveyor.context import get_context
from conveyor.exceptions import ConfigError, PipelineDefinitionError, StackError


def _store_rows() -> dict[str, int]:
    from conveyor.store import schema

    ctx = get_context()
    ctx.ensure_defaults()
    with ctx.store.read() as c:
        return {t.name: c.scalar(f"SELECT count(*) FROM {t.name}") for t in schema.metadata.sorted_tables}


@step
def one() -> int:
    return 1


@step
def inc(x: int) -> int:
    return x + 1


def test_bad_memory_string_lists_accepted_forms() -> None:
    with pytest.raises(ValueError) as info:
        ResourceSettings(memory="32 gigs")
    for form in ("32GB", "32Gi", "512MiB", "2TB"):
        assert form in str(info.value)
    with pytest.raises(ConfigError) as info2:
        step(settings={"resources": {"memory": "lots"}})(lambda: 1)
    assert "accepted forms" in str(info2.value)


def test_unknown_settings_key_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        step(settings={"resource": ResourceSettings(cpu_count=1)})(lambda: 1)
    assert "'resource'" in str(info.value) and '"resources"' in str(info.value) and "step_operator.<flavor>" in str(info.value)


def test_unknown_resource_field_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        step(settings={"resources": {"gpus": 1}})(lambda: 1)
    assert "unknown field 'gpus'" in str(info.value)
    assert "cpu_count, gpu_count, memory" in str(info.value)


def test_unknown_flavor_settings_field_fails_before_the_run_and_store_is_unchanged() -> None:
    @step(step_operator="local", settings={"step_operator.local": {"enviroment": {"A": "1"}}})
    def typo() -> int:
        return 1

    @pipeline
    def p():
        typo()

    before = _store_rows()
    with pytest.raises(ConfigError) as info:
        p()
    assert "unknown field 'enviroment'" in str(info.value) and "environment" in str(info.value)
    assert _store_rows() == before


def test_settings_for_another_flavor_are_ignored() -> None:
    @step(step_operator="local", settings={"step_operator.slurm": {"partition": "a100"}})
    def elsewhere() -> int:
        return 1

    @pipeline
    def p():
        elsewhere()

    assert p().status == "completed"


def test_unknown_step_operator_lists_registered_ones_and_the_fix() -> None:
    @step(step_operator="gpu")
    def needs_gpu() -> int:
        return 1

    @pipeline
    def p():
        needs_gpu()

    before = _store_rows()
    with pytest.raises(StackError) as info:
        p()
    msg = str(info.value)
    assert "unknown step operator 'gpu'" in msg and "local" in msg
    assert "conveyor step-operator register gpu" in msg
    assert _store_rows() == before
    assert Client().list_pipeline_runs() == []


def test_cyclic_pipeline_is_refused_with_the_cycle() -> None:
    @pipeline
    def cyclic():
        a = inc(one(), id="a", after="c")
        b = inc(a, id="b")
        inc(b, id="c")

    before = _store_rows()
    with pytest.raises(PipelineDefinitionError) as info:
        cyclic()
    assert "cycle" in str(info.value) and "a -> b -> c -> a" in str(info.value)
    assert _store_rows() == before


def test_unconnected_input_and_empty_pipeline_are_refused() -> None:
    @pipeline
    def unconnected():
        inc()

    @pipeline
    def empty():
        pass

    before = _store_rows()
    with pytest.raises(PipelineDefinitionError) as info:
        unconnected()
    assert "input 'x' is not connected" in str(info.value)
    with pytest.raises(PipelineDefinitionError) as info2:
        empty()
    assert "has no steps" in str(info2.value)
    assert _store_rows() == before


def test_non_json_parameter_is_refused() -> None:
    @pipeline
    def p():
        inc(object())

    with pytest.raises(PipelineDefinitionError) as info:
        p()
    assert "not JSON-serializable" in str(info.value)


def test_invalid_flavor_config_is_refused_at_registration() -> None:
    from conveyor.config.base import validate_strict

    ctx = get_context()
    flavor = ctx.registry.get("step_operator", "local")
    with pytest.raises(ConfigError) as info:
        validate_strict(flavor.config_class, {"memory_enforcement": "magic"}, "step operator 'x'")
    assert "memory_enforcement" in str(info.value)
    with pytest.raises(StackError) as info2:
        ctx.registry.get("step_operator", "nonexistent")
    assert "Known flavors" in str(info2.value) and "fault" in str(info2.value) and "flavor register" in str(info2.value)
