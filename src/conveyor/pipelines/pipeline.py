"""`@pipeline`: calling one compiles it into a snapshot and runs it on the active stack."""

from __future__ import annotations

import copy
import functools
import logging
from typing import TYPE_CHECKING, Any, Callable, TypeVar, overload

from conveyor.config.merge import merge_settings, normalize
from conveyor.config.names import check_name, name_from_function

if TYPE_CHECKING:
    from conveyor.client import PipelineRun
    from conveyor.config.settings import SettingsInput
    from conveyor.pipelines.compiler import Snapshot

F = TypeVar("F", bound=Callable[..., Any])


class Pipeline:
    def __init__(self, func: Callable[..., Any], *, name: str | None = None,
                 settings: SettingsInput | None = None, enable_cache: bool | None = None) -> None:
        self.entrypoint = func
        self.name = name_from_function("pipeline", func.__name__) if name is None else check_name("pipeline", name)
        self.settings = normalize(settings, f"pipeline {self.name!r}")
        self.enable_cache = enable_cache
        functools.update_wrapper(self, func)  # type: ignore[arg-type]

    def compile(self, *args: Any, **kwargs: Any) -> "Snapshot":
        from conveyor.pipelines.compiler import Compilation, _active, build_snapshot, is_jsonable

        compilation = Compilation(self.name)
        token = _active.set(compilation)
        try:
            self.entrypoint(*args, **kwargs)
        finally:
            _active.reset(token)
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
            logging.getLogger(__name__).debug("pipeline %r not run: %s", self.name, reason)
            stop_module_if_importing()
            return None
        from conveyor.execution.run import run_snapshot
        from conveyor.pipelines.main_script import alias_main_module

        alias_main_module()  # step processes return the script's types as `<script>.Foo`: load them as its own
        return run_snapshot(self.compile(*args, **kwargs))

    def with_options(self, *, name: str | None = None, settings: SettingsInput | None = None,
                     enable_cache: bool | None = None) -> "Pipeline":
        new = copy.copy(self)
        if name is not None:
            new.name = check_name("pipeline", name)
        if settings is not None:
            new.settings = merge_settings(self.settings, normalize(settings, f"pipeline {self.name!r}"))
        if enable_cache is not None:
            new.enable_cache = enable_cache
        return new

    def __repr__(self) -> str:
        return f"<pipeline {self.name}>"


@overload
def pipeline(func: F) -> Pipeline: ...
@overload
def pipeline(func: None = None, *, name: str | None = None, settings: SettingsInput | None = None,
             enable_cache: bool | None = None) -> Callable[[F], Pipeline]: ...
def pipeline(func: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Decorate a function that calls steps, bare (`@pipeline`) or with options."""
    if func is not None:
        return Pipeline(func, **options)
    return lambda f: Pipeline(f, **options)
