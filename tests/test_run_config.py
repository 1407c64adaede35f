"""Run configuration the ZenML way: `with_options(run_name=, config_path=, steps=, ...)`, the YAML run config, and
`step.with_options(parameters=...)`; precedence decorator < file < with_options arguments; strict validation."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from conveyor import Client, pipeline, step
from conveyor.exceptions import ConfigError, PipelineDefinitionError, RunFailedError

CALLS = Path("calls.txt")  # relative to the test's project directory


@step(enable_cache=True, settings={"resources": {"cpu_count": 1, "memory": "1GB"}})
def load(n: int, scale: float = 1.0) -> list[float]:
    with CALLS.open("a") as fh:
        fh.write("load\n")
    return [i * scale for i in range(n)]


@step
def total(xs: list[float], offset: int = 0) -> float:
    return sum(xs) + offset


@pipeline
def numbers(n: int = 2) -> None:
    total(load(n))


def write(path: str, text: str) -> str:
    Path(path).write_text(textwrap.dedent(text))
    return path


def test_yaml_run_config_sets_run_name_parameters_cache_and_settings() -> None:
    config = write("run.yaml", """
        run_name: nightly_{date}_{time}
        enable_cache: false
        parameters: {n: 4}
        settings:
          resources: {memory: 2GB}
        steps:
          load:
            parameters: {scale: 2.5}
            settings:
              resources: {cpu_count: 2}
          total:
            parameters: {offset: 100}
    """)
    run = numbers.with_options(config_path=config)()
    assert re.fullmatch(r"nightly_\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d_\d{6}", run.name)
    load_step, total_step = run.steps["load"], run.steps["total"]
    assert load_step.config.parameters == {"n": 4, "scale": 2.5}
    assert total_step.outputs["output"].load() == pytest.approx(2.5 * (0 + 1 + 2 + 3) + 100)
    # step level beats pipeline level (ZenML's rule): `load`'s own enable_cache=True stands; settings merge key by
    # key, field by field
    assert load_step.config.enable_cache is True and total_step.config.enable_cache is False
    assert load_step.config.resource_settings.cpu_count == 2
    assert load_step.config.resource_settings.memory == "1GB"  # the step's own beats the pipeline-level 2GB
    assert total_step.config.resource_settings.memory == "2GB"


def test_with_options_arguments_override_the_file_which_overrides_the_decorators() -> None:
    config = write("run.yaml", """
        steps:
          load:
            enable_cache: false
            parameters: {scale: 2}
          total:
            parameters: {offset: 7}
    """)
    from_file = numbers.with_options(config_path=config)
    assert from_file.step_configs["load"].enable_cache is False
    both = numbers.with_options(config_path=config, steps={"load": {"enable_cache": True, "parameters": {"scale": 4}}},
                                enable_cache=False)
    run = both()
    assert run.steps["load"].config.enable_cache is True  # with_options(steps=...) over the file
    assert run.steps["load"].config.parameters == {"n": 2, "scale": 4}
    assert run.steps["total"].config.parameters == {"offset": 7}  # the file's other steps stay
    assert run.steps["total"].config.enable_cache is False
    # a second run: `load` cached by the argument that beat the file; the file alone would have run it again
    CALLS.unlink()
    assert both().steps["load"].status == "cached" and not CALLS.exists()
    from_file()
    assert CALLS.read_text() == "load\n"


def test_step_with_options_parameters_bind_into_the_call_and_a_conflict_is_an_error() -> None:
    scaled = load.with_options(parameters={"scale": 3})

    @pipeline
    def uses_configured() -> None:
        total(scaled(n=3))

    run = uses_configured()
    assert run.steps["load"].config.parameters == {"n": 3, "scale": 3}
    assert run.steps["total"].outputs["output"].load() == 9

    @pipeline
    def same_value() -> None:
        total(scaled(n=2, scale=3))

    assert same_value().status == "completed"

    @pipeline
    def conflicting() -> None:
        total(scaled(n=2, scale=5))

    with pytest.raises(PipelineDefinitionError, match=r"step 'load'.*scale=3.*conflicts with scale=5"):
        conflicting()
    with pytest.raises(ConfigError, match=r"no parameter 'scael'; its parameters are n, scale"):
        load.with_options(parameters={"scael": 1})


def test_pipeline_parameters_from_the_config_conflict_and_missing() -> None:
    config = write("run.yaml", "parameters: {n: 3}\n")
    assert numbers.with_options(config_path=config)().steps["load"].config.parameters["n"] == 3
    assert numbers.with_options(config_path=config)(n=3).status == "completed"  # the same value agrees
    with pytest.raises(PipelineDefinitionError, match=r"configured parameter n=3 \(in run.yaml\) conflicts with n=5"):
        numbers.with_options(config_path=config)(n=5)

    @pipeline
    def needs(size: int) -> None:
        total(load(size))

    with pytest.raises(PipelineDefinitionError, match=r"needs parameter 'size'.*parameters:. in the run config"):
        needs()
    bad = write("bad.yaml", "parameters: {sise: 3}\n")
    with pytest.raises(PipelineDefinitionError, match=r"parameters.sise is configured \(in bad.yaml\).*: size"):
        needs.with_options(config_path=bad)()
    assert Client().list_pipeline_runs("needs") == []


@pytest.mark.parametrize(("text", "message"), [
    ("steps:\n  load:\n    paramters: {n: 1}\n",
     r"run config 'run.yaml': unknown key 'steps.load.paramters'. Valid keys at steps.load: parameters, settings, "
     r"step_operator, enable_cache, retry, timeout, cache_version"),
    ("enable_cache: false\nrun_nam: x\n", r"unknown key 'run_nam'. Valid keys at the top level: run_name, "),
    ("steps:\n  load:\n    retry: {max_retry: 2}\n", r"unknown key 'steps.load.retry.max_retry'. Valid keys at "
                                                      r"steps.load.retry: max_retries, delay, backoff"),
    ("schedule: {cron_expression: '* * * * *'}\n", r"schedule: a ZenML option Conveyor does not have"),
    ("enable_cache: maybe\n", r"enable_cache: Input should be a valid boolean"),
    ("settings:\n  resources: {gpus: 1}\n", r"run config 'run.yaml': settings settings\['resources'\]: unknown field"),
    ("steps:\n  load:\n    settings: {resource: {}}\n", r"steps.load.settings: unknown settings key 'resource'"),
    ("run_name: nightly_{day}\n", r"unknown placeholder \{day\}.*\{date\} and \{time\}"),
    ("- just\n- a list\n", r"a run config is a mapping of keys"),
    ("steps: {load: {parameters: [1, 2}\n", r"run config 'run.yaml' is not valid YAML at line 1"),
])
def test_a_bad_run_config_is_refused_naming_the_key_path_the_file_and_the_valid_keys(text: str, message: str) -> None:
    config = write("run.yaml", text)
    with pytest.raises(ConfigError, match=message):
        numbers.with_options(config_path=config)


def test_unknown_step_lists_the_pipelines_steps_and_nothing_runs() -> None:
    config = write("run.yaml", "steps:\n  lod:\n    enable_cache: false\n")
    with pytest.raises(PipelineDefinitionError, match=r"steps.lod is configured \(in run.yaml\), but the pipeline "
                                                      r"has no step 'lod'; its steps are: load, total"):
        numbers.with_options(config_path=config)()
    with pytest.raises(ConfigError, match="does not exist"):
        numbers.with_options(config_path="missing.yaml")
    assert not CALLS.exists() and Client().list_pipeline_runs() == []


def test_a_run_name_already_taken_is_refused_before_anything_runs() -> None:
    first = numbers.with_options(run_name="fixed", enable_cache=False)()
    assert first.name == "fixed" and CALLS.read_text() == "load\n"
    with pytest.raises(ConfigError, match=r"a run named 'fixed' already exists.*`conveyor run delete fixed`"):
        numbers.with_options(run_name="fixed", enable_cache=False)()
    assert CALLS.read_text() == "load\n"  # the step did not run again
    assert [r.name for r in Client().list_pipeline_runs()] == ["fixed"]


def test_a_step_on_the_local_step_operator_gets_its_configured_parameters(step_operator) -> None:
    step_operator("sub", "local")
    config = write("run.yaml", """
        steps:
          load:
            step_operator: sub
            parameters: {scale: 0.5}
    """)
    run = numbers.with_options(config_path=config)(n=3)
    assert run.steps["load"].config.step_operator == "sub"
    assert run.steps["load"].outputs["output"].load() == [0.0, 0.5, 1.0]


def test_hook_sources_in_the_run_config_set_the_hooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ZenML's `failure_hook_source` / `success_hook_source`, per step and for the pipeline's other steps."""
    events = tmp_path / "events.txt"
    (tmp_path / "run_config_hooks.py").write_text(textwrap.dedent(f"""
        from pathlib import Path

        from conveyor import get_step_context


        def alert(exception: BaseException) -> None:
            with Path({str(events)!r}).open("a") as fh:
                fh.write(f"failure {{get_step_context().step_name}} {{exception}}\\n")


        def done() -> None:
            with Path({str(events)!r}).open("a") as fh:
                fh.write(f"success {{get_step_context().step_name}}\\n")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = write("hooks.yaml", """
        enable_cache: false
        success_hook_source: run_config_hooks.done
        steps:
          load:
            parameters: {scale: -1.0}
    """)

    @step
    def fails_on_negative(xs: list[float]) -> float:
        if sum(xs) < 0:
            raise ValueError("negative total")
        return sum(xs)

    @pipeline
    def hooked(n: int = 3) -> None:
        fails_on_negative(load(n))

    with pytest.raises(RunFailedError, match="negative total"):
        hooked.with_options(config_path=config, steps={"fails_on_negative": {"failure_hook_source":
                                                                                "run_config_hooks.alert"}})()
    assert sorted(events.read_text().splitlines()) == ["failure fails_on_negative negative total", "success load"]
    bad = write("bad_hooks.yaml", "failure_hook_source: run_config_hooks.nope\n")
    with pytest.raises(TypeError, match="cannot be imported"):
        numbers.with_options(config_path=bad)
