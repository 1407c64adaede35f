"""A pipeline's run configuration: ZenML's YAML shape (`with_options(config_path=...)`) and `with_options(...)`.

    run_name: training_{date}_{time}
    enable_cache: false
    parameters: {epochs: 3}            # the pipeline function's parameters
    settings: {resources: {cpu_count: 2}}
    steps:
      trainer:                         # a step's name in the pipeline (its invocation id)
        parameters: {lr: 0.01}
        settings: {step_operator: {...}}
        step_operator: gpu
        enable_cache: false
        retry: {max_retries: 2}
        timeout: 30m
        cache_version: 2
        failure_hook_source: steps.hooks.notify    # ZenML's keys for on_failure= / on_success=
        success_hook_source: steps.hooks.done
    failure_hook_source: steps.hooks.alert       # pipeline level: for every step without its own

Every level refuses keys it does not know, naming the key's path, the file and the valid keys: a typo must never
be a silently ignored option. ZenML options Conveyor does not have are named as such.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, ValidationError

from conveyor.config.merge import merge_settings, normalize
from conveyor.config.names import check_name
from conveyor.config.resources import StepRetryConfig
from conveyor.exceptions import ConfigError

__all__ = ["HOOK_KEYS", "PipelineRunConfig", "StepRunConfig", "format_run_name", "load_run_config", "merge_step_configs",
           "parse_run_config", "parse_step_configs", "step_options"]

#: ZenML run-config keys Conveyor has no counterpart for, and what to do instead
ZENML_ONLY = {
    "schedule": "schedules are not supported: run the pipeline from cron or your scheduler with "
                "`conveyor pipeline run`",
    "build": "there are no pipeline builds: images are built per step from settings.docker",
    "model": "the Model Control Plane is not supported",
    "extra": "not supported: keep such values in `parameters`",
    "tags": "run tags are not supported",
    "enable_artifact_metadata": "not supported: artifacts always record their type, size and checksum",
    "enable_artifact_visualization": "visualizations are not supported",
    "enable_step_logs": "not configurable: step logs are always kept (see `conveyor run logs`)",
    "experiment_tracker": "experiment trackers are not supported",
    "outputs": "output materializers are chosen by type, not configured per output",
    "substitutions": "only {date} and {time} are substituted in run_name",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StepRunConfig(_Strict):
    """`steps.<name>` of a run config, and each value of `with_options(steps={...})`: what `step.with_options` takes."""

    parameters: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    step_operator: str | bool | None = None
    enable_cache: bool | None = None
    retry: StepRetryConfig | None = None
    timeout: str | float | None = None
    cache_version: str | int | None = None
    failure_hook_source: str | None = None
    success_hook_source: str | None = None


#: run-config keys (ZenML's) -> the `with_options` argument they set
HOOK_KEYS = {"failure_hook_source": "on_failure", "success_hook_source": "on_success"}


class PipelineRunConfig(_Strict):
    """The whole run config: pipeline-level options and the per-step ones under `steps`."""

    run_name: str | None = None
    enable_cache: bool | None = None
    parameters: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    steps: dict[str, StepRunConfig] = {}
    failure_hook_source: str | None = None
    success_hook_source: str | None = None


def _model_at(loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, str]:
    """The model whose fields are valid at `loc` (the parent of the offending key), and that parent's path."""
    model: type[BaseModel] = PipelineRunConfig
    if len(loc) <= 1:
        return model, "the top level"
    if loc[0] == "steps" and len(loc) == 3:
        return StepRunConfig, f"steps.{loc[1]}"
    if loc[0] == "steps" and len(loc) == 4 and loc[2] == "retry":
        return StepRetryConfig, f"steps.{loc[1]}.retry"
    return None, ".".join(map(str, loc[:-1]))


def _explain(err: ValidationError, where: str) -> str:
    problems = []
    for e in err.errors():
        loc = tuple(e["loc"])
        path = ".".join(str(p) for p in loc) or "(the whole file)"
        if e["type"] == "extra_forbidden":
            key = str(loc[-1])
            model, parent = _model_at(loc)
            valid = ", ".join(model.model_fields) if model else "(none)"
            if key in ZENML_ONLY:
                problems.append(f"{path}: a ZenML option Conveyor does not have ({ZENML_ONLY[key]}). "
                                f"Valid keys at {parent}: {valid}")
            else:
                problems.append(f"unknown key {path!r}. Valid keys at {parent}: {valid}")
        else:
            msg = str(e["msg"]).removeprefix("Value error, ")
            problems.append(f"{path}: {msg} (got {e.get('input')!r})")
    return f"{where}: " + "; ".join(problems)


def parse_run_config(data: Any, where: str) -> PipelineRunConfig:
    """Validate a run config (a dict, as loaded from YAML or built by `with_options`); settings checked too."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: a run config is a mapping of keys (run_name, enable_cache, parameters, "
                          f"settings, steps), got {type(data).__name__}")
    try:
        config = PipelineRunConfig.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(_explain(err, where)) from None
    if config.run_name is not None:
        check_run_name(config.run_name, f"{where}: run_name")
    config.settings = normalize(config.settings, f"{where}: settings")
    for name, step in config.steps.items():
        check_name("step", name, where=f"{where}: steps")
        step.settings = normalize(step.settings, f"{where}: steps.{name}.settings")
    return config


def parse_step_configs(steps: Mapping[str, Any], where: str) -> dict[str, StepRunConfig]:
    """`with_options(steps={...})`: the same checks as a file's `steps:`."""
    return parse_run_config({"steps": dict(steps)}, where).steps


def load_run_config(path: str | Path) -> PipelineRunConfig:
    """Read and validate a YAML run config; every error names the file."""
    import yaml

    file = Path(path)
    where = f"run config {str(file)!r}"
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist (relative paths start at {Path.cwd()})") from None
    except OSError as err:
        raise ConfigError(f"{where} cannot be read: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{where} is not valid YAML{at}: {problem}") from None
    return parse_run_config(data, where)


def merge_step_configs(base: Mapping[str, StepRunConfig],
                       update: Mapping[str, StepRunConfig]) -> dict[str, StepRunConfig]:
    """`update` over `base`, step by step and key by key; parameters and settings merge field by field."""
    merged = dict(base)
    for name, new in update.items():
        old = merged.get(name)
        if old is None:
            merged[name] = new
            continue
        changes: dict[str, Any] = {}
        for field in new.model_fields_set:
            if field == "parameters":
                changes[field] = {**old.parameters, **new.parameters}
            elif field == "settings":
                changes[field] = merge_settings(old.settings, new.settings)
            else:
                changes[field] = getattr(new, field)
        merged[name] = old.model_copy(update=changes)
        merged[name].__pydantic_fields_set__.update(changes)
    return merged


def step_options(config: StepRunConfig) -> dict[str, Any]:
    """The keyword arguments of `Step.with_options` this config sets (only the keys it names)."""
    return {HOOK_KEYS.get(field, field): getattr(config, field) for field in config.model_fields_set}


# -- run names ----------------------------------------------------------------------------------------------
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
PLACEHOLDERS = ("date", "time")


def _values(when: datetime) -> dict[str, str]:
    """ZenML's spelling: `{date}` is 2025_01_31, `{time}` is 14_05_09_123456."""
    return {"date": when.strftime("%Y_%m_%d"), "time": when.strftime("%H_%M_%S_%f")}


def check_run_name(template: str, where: str) -> str:
    """Refuse unknown placeholders and names that could never be valid, when the name is given."""
    if not isinstance(template, str):
        raise ConfigError(f"{where}: a run name is a string, got {type(template).__name__}")
    unknown = [p for p in _PLACEHOLDER.findall(template) if p not in PLACEHOLDERS]
    if unknown:
        raise ConfigError(f"{where}: unknown placeholder {{{unknown[0]}}} in run name {template!r}; "
                          f"the placeholders are {{date}} and {{time}}")
    format_run_name(template, datetime(2000, 1, 1), where)
    return template


def format_run_name(template: str, when: datetime, where: str = "run_name") -> str:
    """The run's name with `{date}` and `{time}` filled in, checked against the name rules."""
    values = _values(when)
    name = _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)
    return check_name("run", name, where=where)
