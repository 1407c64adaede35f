"""`@pipeline`: calling one compiles it into a snapshot and runs it on the active stack."""

from __future__ import annotations

import copy
import functools
import os
from typing import TYPE_CHECKING, Any, Callable, Mapping, TypeVar, overload

from conveyor.config.merge import merge_settings, normalize
from conveyor.config.names import check_name, name_from_function

if TYPE_CHECKING:
    from conveyor.client import PipelineRun
    from conveyor.config.run_config import PipelineRunConfig, StepRunConfig
    from conveyor.config.settings import SettingsInput
    from conveyor.pipelines.compiler import Snapshot
    from conveyor.steps.hooks import HookInput

F = TypeVar("F", bound=Callable[..., Any])


class Pipeline:
    def __init__(self, func: Callable[..., Any], *, name: str | None = None,
                 settings: SettingsInput | None = None, enable_cache: bool | None = None,
                 on_failure: "HookInput | None" = None, on_success: "HookInput | None" = None) -> None:
        self.entrypoint = func
        self.name = name_from_function("pipeline", func.__name__) if name is None else check_name("pipeline", name)
        from conveyor.steps.hooks import check_hook

        # applied to each step without its own (ZenML's rule), see conveyor.steps.hooks
        self.on_failure = check_hook(on_failure, "on_failure", f"pipeline {self.name!r}")
        self.on_success = check_hook(on_success, "on_success", f"pipeline {self.name!r}")
        self.settings = normalize(settings, f"pipeline {self.name!r}")
        self.enable_cache = enable_cache
        #: set by `with_options` (run_name, config_path, parameters, steps): see config/run_config.py
        self.run_name: str | None = None
        self.parameters: dict[str, Any] = {}
        self.step_configs: dict[str, StepRunConfig] = {}
        self.config_path: str | None = None
        functools.update_wrapper(self, func)  # type: ignore[arg-type]

    def compile(self, *args: Any, **kwargs: Any) -> "Snapshot":
        from conveyor.pipelines.compiler import Compilation, _active, build_snapshot, is_jsonable

        args, kwargs = self._bind_parameters(args, kwargs)
        compilation = Compilation(self.name, self.step_configs)
        token = _active.set(compilation)
        try:
            self.entrypoint(*args, **kwargs)
        finally:
            _active.reset(token)
        self._check_step_configs(list(compilation.invocations))
        from conveyor.steps.hooks import with_pipeline_hooks

        for invocation in compilation.invocations.values():
            invocation.step = with_pipeline_hooks(invocation.step, self.on_failure, self.on_success)
        import inspect

        bound = inspect.signature(self.entrypoint).bind(*args, **kwargs)
        bound.apply_defaults()
        params = {k: v for k, v in bound.arguments.items() if is_jsonable(v)}
        return build_snapshot(compilation, pipeline_settings=self.settings,
                              pipeline_enable_cache=self.enable_cache, parameters=params)

    def __call__(self, *args: Any, **kwargs: Any) -> "PipelineRun | None":
        """Compile and run; never runs while Conveyor imports the module or in a step's process (`run_guard`).

        Scripts call their pipeline at module level: run wherever the module is imported, it would run again from
        inside each of its steps. There the call ends the module's import (Conveyor keeps what it defined so
        far), or, in a step's process outside such an import, returns None.
        """
        from conveyor.pipelines.run_guard import stop_module_if_importing, why_prevented

        reason = why_prevented()
        if reason is not None:
            import logging  # only here: a run that is not prevented never needs it

            logging.getLogger(__name__).debug("pipeline %r not run: %s", self.name, reason)
            stop_module_if_importing()
            return None
        from conveyor.client import finished_run_view
        from conveyor.execution.run import run_snapshot
        from conveyor.pipelines.main_script import alias_main_module

        alias_main_module()  # step processes return the script's types as `<script>.Foo`: load them as its own
        return finished_run_view(run_snapshot(self.compile(*args, **kwargs), run_name=self.run_name))

    def with_options(self, *, run_name: str | None = None, config_path: str | os.PathLike[str] | None = None,
                     steps: Mapping[str, Any] | None = None, step_configurations: Mapping[str, Any] | None = None,
                     name: str | None = None, settings: SettingsInput | None = None,
                     enable_cache: bool | None = None, parameters: Mapping[str, Any] | None = None,
                     on_failure: "HookInput | None" = None, on_success: "HookInput | None" = None) -> "Pipeline":
        """A copy with options changed, ZenML's way: the run config file at `config_path` overrides what the
        decorators set, and the other arguments of this call override the file. `steps` (or ZenML's older
        `step_configurations`) maps step names to what `step.with_options` takes; `run_name` may hold `{date}`
        and `{time}`."""
        new = copy.copy(self)
        new._configure(run_name=run_name, config_path=config_path, steps={**(step_configurations or {}),
                       **(steps or {})}, settings=settings, enable_cache=enable_cache, parameters=parameters)
        from conveyor.steps.hooks import check_hook

        if on_failure is not None:
            new.on_failure = check_hook(on_failure, "on_failure", f"pipeline {self.name!r}")
        if on_success is not None:
            new.on_success = check_hook(on_success, "on_success", f"pipeline {self.name!r}")
        if name is not None:
            new.name = check_name("pipeline", name)
        return new

    def _configure(self, *, run_name: str | None, config_path: str | os.PathLike[str] | None,
                   steps: Mapping[str, Any], settings: SettingsInput | None, enable_cache: bool | None,
                   parameters: Mapping[str, Any] | None) -> None:
        """The file first (over the decorators), then the explicit arguments (over the file)."""
        from conveyor.config.run_config import load_run_config, parse_run_config

        if config_path is not None:
            self.config_path = os.fspath(config_path)
            self._apply(load_run_config(config_path))
        given: dict[str, Any] = {k: v for k, v in {
            "run_name": run_name, "enable_cache": enable_cache, "parameters": parameters, "settings": settings,
            "steps": steps or None}.items() if v is not None}
        if given:
            self._apply(parse_run_config(given, f"pipeline {self.name!r} with_options(...)"))

    def _apply(self, config: "PipelineRunConfig") -> None:
        """Lay a validated run config over this (copied) pipeline's options."""
        from conveyor.config.run_config import merge_step_configs

        fields = config.model_fields_set
        if "run_name" in fields:
            self.run_name = config.run_name
        if "enable_cache" in fields:
            self.enable_cache = config.enable_cache
        if "parameters" in fields:
            self.parameters = {**self.parameters, **config.parameters}
        if "settings" in fields:
            self.settings = merge_settings(self.settings, config.settings)
        if "steps" in fields:
            self.step_configs = merge_step_configs(self.step_configs, config.steps)
        if fields & {"failure_hook_source", "success_hook_source"}:
            from conveyor.steps.hooks import check_hook
        if "failure_hook_source" in fields:
            self.on_failure = check_hook(config.failure_hook_source, "on_failure", f"pipeline {self.name!r}")
        if "success_hook_source" in fields:
            self.on_success = check_hook(config.success_hook_source, "on_success", f"pipeline {self.name!r}")

    def _check_step_configs(self, invoked: list[str]) -> None:
        """A configured step the pipeline does not call is a typo: list the steps it does call."""
        unknown = [n for n in self.step_configs if n not in invoked]
        if unknown:
            from conveyor.exceptions import PipelineDefinitionError

            source = f" (in {self.config_path})" if self.config_path else ""
            raise PipelineDefinitionError(
                f"pipeline {self.name!r}: steps.{unknown[0]} is configured{source}, but the pipeline has no step "
                f"{unknown[0]!r}; its steps are: {', '.join(invoked)}")

    def _bind_parameters(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call's arguments with the configured `parameters` filled in (a conflicting value is an error, as in
        ZenML), checked against the function's type hints."""
        import inspect

        from conveyor.exceptions import PipelineDefinitionError
        from conveyor.pipelines.compiler import is_jsonable
        from conveyor.steps.outputs import input_types

        where = f"pipeline {self.name!r}"
        signature = inspect.signature(self.entrypoint)
        try:
            bound = signature.bind_partial(*args, **kwargs)
        except TypeError as err:
            raise PipelineDefinitionError(f"{where}: {err}") from None
        named = [n for n, p in signature.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        source = f" (in {self.config_path})" if self.config_path else ""
        for pname, value in self.parameters.items():
            if pname not in named:
                raise PipelineDefinitionError(f"{where}: parameters.{pname} is configured{source}, but the pipeline "
                                              f"function takes no {pname!r}; its parameters are: "
                                              f"{', '.join(named) or '(none)'}")
            if pname in bound.arguments and bound.arguments[pname] != value:
                raise PipelineDefinitionError(
                    f"{where}: configured parameter {pname}={value!r}{source} conflicts with {pname}="
                    f"{bound.arguments[pname]!r} passed in the call: set it in one place only")
            bound.arguments[pname] = value
        missing = [n for n in named if n not in bound.arguments
                   and signature.parameters[n].default is inspect.Parameter.empty]
        if missing:
            raise PipelineDefinitionError(
                f"{where} needs parameter {missing[0]!r}: pass it in the call ({self.name}({missing[0]}=...)) or "
                "under `parameters:` in the run config (with_options(config_path=...), conveyor pipeline run --config)")
        if bound.arguments:
            from conveyor.pipelines.parameters import validated_parameter

            hints = input_types(self.entrypoint)
            for pname in named:
                if pname in bound.arguments and is_jsonable(bound.arguments[pname]):
                    bound.arguments[pname] = validated_parameter(bound.arguments[pname], hints.get(pname, Any),
                                                                 where, pname)
        return bound.args, bound.kwargs

    def __repr__(self) -> str:
        return f"<pipeline {self.name}>"


@overload
def pipeline(func: F) -> Pipeline: ...
@overload
def pipeline(func: None = None, *, name: str | None = None, settings: SettingsInput | None = None,
             enable_cache: bool | None = None, on_failure: "HookInput | None" = None,
             on_success: "HookInput | None" = None) -> Callable[[F], Pipeline]: ...
def pipeline(func: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Decorate a function that calls steps, bare (`@pipeline`) or with options."""
    if func is not None:
        return Pipeline(func, **options)
    return lambda f: Pipeline(f, **options)
