"""Finding one pipeline run from what a user types: a name, an id, a unique prefix of either, or a pipeline
name and a run name (`Client().get_pipeline_run("training_pipeline", "run_name")`, as in ZenML's docs)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor.exceptions import ConveyorError

if TYPE_CHECKING:
    from conveyor.store.store import MetadataStore

__all__ = ["find_pipeline_run"]

#: an id prefix shorter than this matches too much to mean anything
MIN_ID_PREFIX = 4
SHOWN_CANDIDATES = 10


def find_pipeline_run(store: "MetadataStore", name_id_or_prefix: str, run_name: str | None = None,
                      allow_prefix_match: bool = True) -> dict[str, Any]:
    """The run's store row. With `run_name`, `name_id_or_prefix` is the pipeline's name and `run_name` the run's
    name (or id, or a unique prefix) among that pipeline's runs. Raises ConveyorError naming the candidates when
    nothing, or more than one run, matches."""
    if run_name is None:
        row = store.find_run(name_id_or_prefix)  # exact id or name, "latest"
        if row is not None:
            return row
        rows, scope, wanted = store.list_runs(), "", name_id_or_prefix
    else:
        rows = store.list_runs(name_id_or_prefix)
        if not rows:
            raise ConveyorError(f"pipeline {name_id_or_prefix!r} has no runs: see `conveyor run list` for the "
                                "pipelines and runs there are")
        scope, wanted = f" of pipeline {name_id_or_prefix!r}", run_name
        exact = [r for r in rows if wanted in (r["id"], r["name"])]
        if exact:
            return exact[0]
    matches = [r for r in rows if allow_prefix_match and _prefix_match(r, wanted)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ConveyorError(f"no pipeline run{scope} named or with id {wanted!r}: see `conveyor run list`")
    shown = ", ".join(f"{r['name']} ({r['id']})" for r in matches[:SHOWN_CANDIDATES])
    more = f" and {len(matches) - SHOWN_CANDIDATES} more" if len(matches) > SHOWN_CANDIDATES else ""
    raise ConveyorError(f"{wanted!r} matches {len(matches)} pipeline runs{scope}: {shown}{more}. "
                        "Give more of the name or id, or the full id.")


def _prefix_match(row: dict[str, Any], prefix: str) -> bool:
    return bool(prefix) and (row["name"].startswith(prefix)
                             or (len(prefix) >= MIN_ID_PREFIX and row["id"].startswith(prefix)))
