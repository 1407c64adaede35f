"""`log_metadata(metadata={...})`: JSON values attached to a step run, an artifact or a run (ZenML's shape).

Inside a step, with no target, it attaches to the running step; with `artifact_name=` (or `infer_artifact=True`)
to one of its outputs. What a step logs is collected in its context and recorded by the launcher when the step
ends, so a step on a step operator needs no metadata store. Outside a step it takes explicit ids and writes to the
store at once. Light at import: the store is loaded only on that outside path.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, Mapping

from conveyor.exceptions import ConveyorError

if TYPE_CHECKING:
    from conveyor.steps.context import MetadataRecord
    from conveyor.store.store import MetadataStore

__all__ = ["MetadataTargetError", "checked_values", "log_metadata", "resolve_target"]


class MetadataTargetError(ConveyorError, ValueError):
    """`log_metadata` was not told, or could not find, what to attach the metadata to."""


def checked_values(metadata: Any) -> dict[str, Any]:
    """`metadata` as a plain dict of JSON values; a key with a value that is not JSON-able is named."""
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict of names to JSON values, got {type(metadata).__name__}")
    values: dict[str, Any] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"metadata keys must be non-empty strings, got {key!r}")
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as err:
            kind = ("NaN or infinity" if isinstance(value, float) and not math.isfinite(value)
                    else f"a value of type {type(value).__name__}")
            raise TypeError(f"metadata {key!r}: {kind} is not a JSON value ({err}); log numbers, strings, "
                            "booleans, None, or lists and dicts of them (e.g. str(value) or float(value))") from None
        values[key] = json.loads(text)
    return values


def log_metadata(
    metadata: Mapping[str, Any],
    step_id: str | None = None,
    step_name: str | None = None,
    run_id_name_or_prefix: str | None = None,
    artifact_version_id: str | None = None,
    artifact_name: str | None = None,
    artifact_version: str | int | None = None,
    infer_artifact: bool = False,
    model_version_id: Any = None,
    model_name: str | None = None,
    model_version: Any = None,
    infer_model: bool = False,
) -> None:
    """Attach `metadata` to a step run, an artifact version or a run.

    Targets, as in ZenML: `step_id`, or `step_name` with `run_id_name_or_prefix`, is a step run;
    `run_id_name_or_prefix` alone, the run; `artifact_version_id`, or `artifact_name` (with `artifact_version`,
    else the newest version), an artifact. Inside a step, no target is the running step, and `artifact_name` (or
    `infer_artifact=True`) without a version is one of its outputs or an artifact it saved. Models are not
    supported.
    """
    if model_version_id is not None or model_name is not None or model_version is not None or infer_model:
        raise NotImplementedError("Conveyor has no model control plane: log_metadata cannot attach to models; "
                                  "attach the metadata to the step (no target) or to an artifact (artifact_name=)")
    values = checked_values(metadata)
    from conveyor.steps.context import MetadataRecord, current_step_context

    context = current_step_context()
    version = None if artifact_version is None else str(artifact_version)
    if step_id is not None:
        record = MetadataRecord("step_run", values, step=step_id)
    elif step_name is not None:
        if run_id_name_or_prefix is None and context is None:
            raise MetadataTargetError(f"log_metadata(step_name={step_name!r}) outside a step needs the run too: "
                                      "pass run_id_name_or_prefix= (a run name, id or id prefix)")
        record = MetadataRecord("step_of_run", values, run=run_id_name_or_prefix or (context and context.pipeline_run.id),
                                step=step_name)
    elif run_id_name_or_prefix is not None:
        record = MetadataRecord("run", values, run=run_id_name_or_prefix)
    elif artifact_version_id is not None:
        record = MetadataRecord("artifact", values, artifact_id=artifact_version_id)
    elif context is not None and (infer_artifact or artifact_name is not None) and version is None:
        saved = [s for s in context.record.saved if s.name == artifact_name]
        if saved:
            record = MetadataRecord("artifact", values, artifact_id=saved[-1].id)
        else:
            record = MetadataRecord("output", values, output=context.output_name(artifact_name))
    elif artifact_name is not None:
        record = MetadataRecord("artifact", values, artifact_name=artifact_name, artifact_version=version)
    elif context is not None:
        record = MetadataRecord("step", values)
    else:
        raise MetadataTargetError(
            "log_metadata() outside a step needs a target: step_name= with run_id_name_or_prefix= (a step run), "
            "run_id_name_or_prefix= alone (a run), or artifact_name= / artifact_version_id= (an artifact); inside a "
            "step it attaches to the running step")
    if context is not None:
        context.record.metadata.append(record)
        return
    from conveyor.context import get_context

    store = get_context().store
    store.put_metadata([{**resolve_target(store, record), "values": values}])


def resolve_target(store: "MetadataStore", record: "MetadataRecord") -> dict[str, str]:
    """The store row an explicit target names: {"run_id" | "step_run_id" | "artifact_id": id}."""
    if record.target == "step_run":
        if store.find_step_run(record.step or "") is None:
            raise MetadataTargetError(f"log_metadata: no step run with id {record.step!r}")
        return {"step_run_id": record.step or ""}
    if record.target in ("run", "step_of_run"):
        run = store.find_run(record.run or "")
        if run is None:
            raise MetadataTargetError(f"log_metadata: no pipeline run named or with id {record.run!r}: see "
                                      "`conveyor run list`")
        if record.target == "run":
            return {"run_id": run["id"]}
        steps = {s["name"]: s["id"] for s in store.step_runs(run["id"])}
        if record.step not in steps:
            raise MetadataTargetError(f"log_metadata: run {run['name']} has no step {record.step!r}; its steps are "
                                      f"{', '.join(steps) or 'none'}")
        return {"step_run_id": steps[record.step]}
    if record.target == "artifact":
        ref = record.artifact_id or record.artifact_name or ""
        row = store.find_artifact_version(ref, None if record.artifact_id else record.artifact_version)
        if row is None:
            which = (f"id {ref!r}" if record.artifact_id else f"{ref!r}"
                     + (f" version {record.artifact_version}" if record.artifact_version is not None else ""))
            raise MetadataTargetError(f"log_metadata: no artifact {which}: see `conveyor artifact list`")
        return {"artifact_id": row["id"]}
    raise MetadataTargetError(f"log_metadata: target {record.target!r} can only be resolved inside its step")
