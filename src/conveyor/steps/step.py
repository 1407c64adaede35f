"""`@step`: a plain function outside a pipeline, a node of the DAG inside one."""

from __future__ import annotations

import copy
import functools
import inspect
from typing import TYPE_CHECKING, Any, Callable, Mapping, TypeVar, overload

from conveyor.config.merge import merge_settings, normalize
from conveyor.config.names import check_name, name_from_function
from conveyor.config.units import parse_duration
from conveyor.steps.hooks import HookInput, check_hook
from conveyor.steps.outputs import OutputSpec, input_types, output_specs

if TYPE_CHECKING:
    from conveyor.config.resources import StepRetryConfig
    from conveyor.config.settings import SettingsInput

F = TypeVar("F", bound=Callable[..., Any])

_UNSET: Any = object()


def _retry(retry: "StepRetryConfig | Mapping[str, Any] | None", where: str) -> "StepRetryConfig | None":
    if retry is None:
        return None
    from conveyor.config.base import validate_strict
    from conveyor.config.resources import StepRetryConfig

    return validate_strict(StepRetryConfig, retry, f"{where} retry")  # type: ignore[return-value]


def _timeout(value: str | float | None, where: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as err:
        from conveyor.exceptions import ConfigError

        raise ConfigError(f"{where} timeout: {err}") from None


def _cache_version(value: str | int | None, where: str) -> str | None:
    """Folded into the cache key: bump it when the step's result changes for a reason the key cannot see."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"{where}: cache_version must be a string or an integer (e.g. \"2\"), got {value!r}")
    return str(value)


def _parameters(parameters: Mapping[str, Any], step: "Step", where: str) -> dict[str, Any]:
    """Names the function does not take are refused now, listing the ones it does."""
    if not isinstance(parameters, Mapping):
        raise TypeError(f"{where}: parameters must be a dict of argument names to values, got {parameters!r}")
    known = step.signature.parameters
    unknown = [k for k in parameters if k not in known]
    if unknown:
        from conveyor.exceptions import ConfigError

        raise ConfigError(f"{where}: the function has no parameter {unknown[0]!r}; its parameters are "
                          f"{', '.join(known) or '(none)'}")
    return dict(parameters)


class Step:
    """A step definition. Calling it inside a `@pipeline` records an invocation and returns output handles."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        step_operator: str | bool | None = None,
        settings: SettingsInput | None = None,
        enable_cache: bool | None = None,
        retry: StepRetryConfig | Mapping[str, Any] | None = None,
        timeout: str | float | None = None,
        cache_version: str | int | None = None,
        on_failure: "HookInput | None" = None,
        on_success: "HookInput | None" = None,
    ) -> None:
        if not callable(func):
            raise TypeError("@step decorates a function")
        self.entrypoint = func
        self.name = name_from_function("step", func.__name__) if name is None else check_name("step", name)
        where = f"step {self.name!r}"
        if step_operator is not None and not isinstance(step_operator, (str, bool)):
            raise TypeError(f"{where}: step_operator must be a registered step operator's name or True, got {step_operator!r}")
        self.step_operator = step_operator
        self.settings = normalize(settings, where)
        self.enable_cache = enable_cache
        self.retry = _retry(retry, where)
        self.timeout = _timeout(timeout, where)
        self.cache_version = _cache_version(cache_version, where)
        self.on_failure = check_hook(on_failure, "on_failure", where)  # see conveyor.steps.hooks
        self.on_success = check_hook(on_success, "on_success", where)
        #: values bound into the step's call inside a pipeline (`with_options(parameters=...)`, a run config)
        self.parameters: dict[str, Any] = {}
        self.signature = inspect.signature(func)
        self.outputs: tuple[OutputSpec, ...] = output_specs(func)
        self.input_types = input_types(func)
        functools.update_wrapper(self, func)  # type: ignore[arg-type]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from conveyor.pipelines.compiler import active_compilation

        compilation = active_compilation()
        if compilation is None:
            return self.entrypoint(*args, **kwargs)
        return compilation.add_invocation(self, args, kwargs)

    def with_options(
        self,
        *,
        name: str | None = None,
        step_operator: str | bool | None = _UNSET,
        settings: SettingsInput | None = None,
        enable_cache: bool | None = _UNSET,
        retry: StepRetryConfig | Mapping[str, Any] | None = _UNSET,
        timeout: str | float | None = _UNSET,
        cache_version: str | int | None = _UNSET,
        parameters: Mapping[str, Any] | None = None,
        on_failure: "HookInput | None" = _UNSET,
        on_success: "HookInput | None" = _UNSET,
    ) -> "Step":
        """A copy with some options changed; new settings merge over the old ones key by key.

        `parameters` are bound into the step's call inside a pipeline, merged over earlier ones; a call that passes
        the same argument a different value is an error when the pipeline compiles (ZenML's rule)."""
        new = copy.copy(self)
        where = f"step {self.name!r}"
        if name is not None:
            new.name = check_name("step", name)
        if step_operator is not _UNSET:
            new.step_operator = step_operator
        if settings is not None:
            new.settings = merge_settings(self.settings, normalize(settings, where))
        if enable_cache is not _UNSET:
            new.enable_cache = enable_cache
        if retry is not _UNSET:
            new.retry = _retry(retry, where)
        if timeout is not _UNSET:
            new.timeout = _timeout(timeout, where)
        if cache_version is not _UNSET:
            new.cache_version = _cache_version(cache_version, where)
        if on_failure is not _UNSET:
            new.on_failure = check_hook(on_failure, "on_failure", where)
        if on_success is not _UNSET:
            new.on_success = check_hook(on_success, "on_success", where)
        if parameters is not None:
            new.parameters = {**self.parameters, **_parameters(parameters, self, where)}
        return new

    def __repr__(self) -> str:
        return f"<step {self.name}>"


@overload
def step(func: F) -> Step: ...
@overload
def step(
    func: None = None,
    *,
    name: str | None = None,
    step_operator: str | bool | None = None,
    settings: SettingsInput | None = None,
    enable_cache: bool | None = None,
    retry: StepRetryConfig | Mapping[str, Any] | None = None,
    timeout: str | float | None = None,
    cache_version: str | int | None = None,
    on_failure: "HookInput | None" = None,
    on_success: "HookInput | None" = None,
) -> Callable[[F], Step]: ...
def step(func: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Decorate a function as a step, bare (`@step`) or with options (`@step(step_operator="gpu")`)."""
    if func is not None:
        return Step(func, **options)
    return lambda f: Step(f, **options)
