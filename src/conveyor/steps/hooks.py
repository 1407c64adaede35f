"""Step hooks `on_failure=` / `on_success=` (ZenML's): checked when declared, run where the step ran.

`on_success` takes no arguments. `on_failure` takes none, or one: the exception the step raised. A pipeline's
hooks apply to each of its steps without its own. Hooks travel to a step operator like the step's function (by
import path, else pickled by value) and run there, in the step's process, with `get_step_context()` available.
A hook that raises is reported in the step's log; the step's outcome stays what the step made it.
"""

from __future__ import annotations

import inspect
import sys
import traceback
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Mapping

__all__ = ["HOOK_KINDS", "HookInput", "StepHooks", "check_hook", "hook_sources", "load_hooks", "step_hooks",
           "with_pipeline_hooks"]

HOOK_KINDS = ("on_failure", "on_success")
#: a hook as `@step(on_failure=...)` takes it: the function, or its import path "pkg.module.func"
HookInput = Callable[..., Any] | str


def check_hook(hook: Any, kind: str, where: str) -> Callable[..., Any] | None:
    """`hook` as a callable (an import path "pkg.module.func" is imported), or TypeError naming the problem."""
    if hook is None:
        return None
    if isinstance(hook, str):
        from conveyor.artifacts.materializers import load_import_path

        try:
            hook = load_import_path(hook)
        except Exception as err:  # noqa: BLE001 - any import failure is the user's to fix
            raise TypeError(f"{where}: {kind} hook {hook!r} cannot be imported ({err}): pass the function itself or "
                            "its full import path, e.g. 'my_project.hooks.alert'") from None
    if not callable(hook):
        raise TypeError(f"{where}: {kind} must be a function, got {hook!r}")
    try:
        params = [p for p in inspect.signature(hook).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    except (TypeError, ValueError):  # a builtin without a signature: called as the kind says
        return hook  # type: ignore[no-any-return]
    allowed = 1 if kind == "on_failure" else 0
    if len(params) > allowed:
        takes = ("no arguments, or one: the exception the step raised (e.g. `def alert(exception: BaseException)`)"
                 if kind == "on_failure" else "no arguments")
        raise TypeError(f"{where}: {kind} hook {getattr(hook, '__name__', hook)!r} takes "
                        f"{', '.join(p.name for p in params)}; an {kind} hook takes {takes}")
    return hook  # type: ignore[no-any-return]


@dataclass(frozen=True)
class StepHooks:
    on_failure: Callable[..., Any] | None = None
    on_success: Callable[..., Any] | None = None

    def __bool__(self) -> bool:
        return self.on_failure is not None or self.on_success is not None

    def failed(self, error: BaseException) -> None:
        """Run the failure hook with `error` if it takes an argument; its own error is only reported."""
        hook = self.on_failure
        if hook is None:
            return
        try:
            takes_error = _takes_argument(hook)
        except (TypeError, ValueError):
            takes_error = False
        _run(hook, "on_failure", (error,) if takes_error else ())

    def succeeded(self) -> None:
        if self.on_success is not None:
            _run(self.on_success, "on_success", ())


def _takes_argument(hook: Callable[..., Any]) -> bool:
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
               for p in inspect.signature(hook).parameters.values())


def _run(hook: Callable[..., Any], kind: str, args: tuple[Any, ...]) -> None:
    try:
        hook(*args)
    except Exception as err:  # noqa: BLE001 - a hook must not change the step's outcome
        name = getattr(hook, "__qualname__", repr(hook))
        print(f"conveyor: the {kind} hook {name} raised {type(err).__name__}: {err}; the step's outcome is "
              "unchanged. Traceback of the hook:\n" + "".join(traceback.format_exception(err)).rstrip(),
              file=sys.stderr, flush=True)


def hook_sources(step: Any, hooks: StepHooks) -> dict[str, Any]:
    """How the remote side finds each hook: like a step's function (see `pipelines.source.step_source`)."""
    from conveyor.pipelines.source import step_source

    sources: dict[str, Any] = {}
    for kind in HOOK_KINDS:
        hook = getattr(hooks, kind)
        if hook is not None:
            shim = SimpleNamespace(entrypoint=hook, name=f"{step.name} ({kind} hook)", step_operator=step.step_operator)
            sources[kind] = step_source(shim)
    return sources


def load_hooks(sources: Mapping[str, Any] | None) -> StepHooks:
    """The hooks a job spec names (run by the remote side, and by a resumed run's in-process steps)."""
    if not sources:
        return StepHooks()
    from conveyor.pipelines.source import load_step_function

    return StepHooks(**{kind: load_step_function(dict(source)) for kind, source in sources.items()
                        if kind in HOOK_KINDS})


def with_pipeline_hooks(step: Any, on_failure: Callable[..., Any] | None, on_success: Callable[..., Any] | None) -> Any:
    """`step`, given the pipeline's hooks where it has none of its own."""
    changes = {kind: hook for kind, hook in (("on_failure", on_failure), ("on_success", on_success))
               if hook is not None and getattr(step, kind, None) is None}
    return step.with_options(**changes) if changes else step


def step_hooks(step: Any) -> StepHooks:
    """The hooks a step object carries (a step rebuilt from a stored snapshot carries none)."""
    return StepHooks(getattr(step, "on_failure", None), getattr(step, "on_success", None))
