"""Calling the step function and saving its outputs; shared by the in-process path and the remote entrypoint."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from conveyor.artifacts.store import ArtifactStore


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


def load_inputs(inputs: Mapping[str, Mapping[str, Any]], store: "ArtifactStore") -> dict[str, Any]:
    from conveyor.artifacts.materializers import load_artifact

    # the checksum recorded with each input (carried by the job spec on the remote side) catches a swapped folder
    return {arg: load_artifact(a["uri"], store, a["materializer"], a["data_type"], checksum=a.get("checksum"),
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
                 outputs: Mapping[str, Mapping[str, str]], store: "ArtifactStore") -> dict[str, Any]:
    """Call the function and save each output atomically at its pre-allocated URI; returns name -> ArtifactMeta."""
    from conveyor.artifacts.materializers import save_artifact

    value = func(**parameters, **inputs)
    values = split_outputs(step_name, list(outputs), value)
    return {name: save_artifact(values[name], o["uri"], store, resolve_type(o["type"])) for name, o in outputs.items()}
