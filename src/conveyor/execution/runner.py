"""Calling the step function and saving its outputs; shared by the in-process path and the remote entrypoint."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from conveyor.artifacts.store import ArtifactStore
    from conveyor.execution.jobspec import ArtifactRef, JobSpec, OutputSlot
    from conveyor.steps.context import StepContext
    from conveyor.steps.hooks import StepHooks


class OutputMismatchError(TypeError):
    pass


def split_outputs(step_name: str, names: list[str], value: Any) -> dict[str, Any]:
    if not names:
        return {}
    if len(names) == 1:
        return {names[0]: value}
    if not isinstance(value, tuple) or len(value) != len(names):
        got = f"a tuple of {len(value)}" if isinstance(value, tuple) else type(value).__name__
        raise OutputMismatchError(f"step {step_name!r} declares outputs {names} but returned {got}")
    return dict(zip(names, value))


def load_inputs(inputs: Mapping[str, "ArtifactRef"], store: "ArtifactStore") -> dict[str, Any]:
    from conveyor.artifacts.materializers import load_artifact

    # the checksum recorded with each input (carried by the job spec on the remote side) catches a swapped folder
    return {arg: load_artifact(a.uri, store, a.materializer, a.data_type, checksum=a.checksum,
                               label=f"input {arg!r}") for arg, a in inputs.items()}


def resolve_type(path: str) -> Any:
    if path == "typing:Any":
        return None
    from conveyor.artifacts.materializers import load_import_path

    try:
        return load_import_path(path)
    except Exception:  # a type we cannot import here: materialize by the value's own type
        return None


def run_function(func: Callable[..., Any], step_name: str, parameters: Mapping[str, Any], inputs: Mapping[str, Any],
                 outputs: Mapping[str, "OutputSlot"], store: "ArtifactStore", *,
                 context: "StepContext | None" = None, hooks: "StepHooks | None" = None,
                 keep: Callable[[str, Any], bool] | None = None) -> dict[str, Any]:
    """Call the function and save each output atomically at its pre-allocated URI; returns name -> ArtifactMeta.

    `context` is what `get_step_context()` returns meanwhile (hooks included); `on_success` runs once the outputs
    are saved, `on_failure` when the function or saving raised (not on a stop or timeout), before the error goes on.
    `keep(name, value)` is asked before each output is saved: True when the caller keeps the value in memory for
    its reader (execution/handover.py), so that the stored copy need not stay in the page cache.
    """
    from conveyor.steps.context import running_step

    with running_step(context) if context is not None else nullcontext():
        try:
            value = func(**parameters, **inputs)
            values = split_outputs(step_name, list(outputs), value)
            from conveyor.steps.type_checks import check_outputs

            check_outputs(step_name, func, values)  # before anything is stored: `-> int` returning a str fails the step
            del value  # (a tuple of outputs): below, each output's only references are known
            metas: dict[str, Any] = {}
            for name, o in outputs.items():
                output = values.pop(name)
                kept = keep is not None and keep(name, output)
                # `output` and getrefcount's argument: nothing else (the step's globals, another output) holds it.
                # Asked on its own line: inside the call below, the argument being passed would count too
                owned = not kept and sys.getrefcount(output) <= 2
                metas[name] = _save(output, o, store, kept, owned)
                del output
        except (Exception, SystemExit) as err:
            if hooks is not None:
                hooks.failed(err)
            raise
        if hooks is not None:
            hooks.succeeded()
    return metas


def _save(value: Any, output: "OutputSlot", store: "ArtifactStore", kept: bool, owned: bool) -> Any:
    """Save one output. A large array kept for its reader in memory is written past the page cache; one that
    nothing else references (`owned`) and that is dropped once saved gives its pages back as they are written
    (artifacts/materializers/_npy.py)."""
    from conveyor.artifacts.materializers import save_artifact

    if not kept and not owned:
        return save_artifact(value, output.uri, store, resolve_type(output.type))
    from conveyor.artifacts.materializers._npy import Writing, writing

    with writing(Writing.PAST_THE_CACHE if kept else Writing.RELEASING):
        return save_artifact(value, output.uri, store, resolve_type(output.type))


def context_from_job(spec: "JobSpec", store: "ArtifactStore") -> "StepContext":
    """The step context a job spec describes (the remote side's `get_step_context()`)."""
    from conveyor.steps.context import StepContext

    return StepContext(pipeline_name=spec.pipeline, run_id=spec.run_id, run_name=spec.run_name,
                       step_name=spec.step_name, step_run_id=spec.step_run_id, attempt=spec.attempt,
                       attempt_uri=spec.attempt_uri,
                       output_uris=spec.artifact_uris or {name: o.uri for name, o in spec.outputs.items()},
                       artifact_names=spec.artifact_names, artifact_store=store)
