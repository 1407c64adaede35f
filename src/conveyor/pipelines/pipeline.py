"""`@pipeline`: calling one compiles it into a snapshot and runs it on the active stack."""

from __future__ import annotations

import copy
import functools
from typing import TYPE_CHECKING, Any, Callable, TypeVar, overload

from conveyor.config.merge import merge_settings, normalize

if TYPE_CHECKING:
    from conveyor.client import PipelineRun
    from conveyor.config.settings import SettingsInput
    from conveyor.pipelines.compiler import Snapshot

F = TypeVar("F", bound=Callable[..., Any])


class Pipeline:
    def __init__(self, func: Callable[..., Any], *, name: str | None = None,
                 settings: SettingsInput | None = None, enable_cache: bool | None = None) -> None:
        self.entrypoint = func
        self.name = name or func.__name__
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

    def __call__(self, *args: Any, **kwargs: Any) -> "PipelineRun":
        from conveyor.execution.run import run_snapshot

        return run_snapshot(self.compile(*args, **kwargs))

    def with_options(self, *, name: str | None = None, settings: SettingsInput | None = None,
                     enable_cache: bool | None = None) -> "Pipeline":
        new = copy.copy(self)
        if name is not None:
            new.name = name
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
