"""`conveyor artifact list | describe`: artifacts by name and version (reads through the Client)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from conveyor.cli._common import emit, fmt_time, get_ctx, output_option, say, show, table

if TYPE_CHECKING:
    from conveyor.client import ArtifactView

__all__ = ["artifact"]


def _json(a: "ArtifactView") -> dict[str, Any]:
    return {"name": a.name, "version": a.version, "id": a.id, "uri": a.uri, "data_type": a.data_type,
            "materializer": a.materializer, "checksum": a.checksum, "size": a.size, "created": a.created,
            "producer_run": a.producer_run_name, "producer_step": a.producer_step_name, "run_metadata": a.run_metadata}


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _split_ref(ref: str) -> tuple[str, str | None]:
    """NAME:VERSION -> (NAME, VERSION); a name holding `::` (`pipeline::step::output`) splits at its last `:`
    only when what follows is a version."""
    head, sep, tail = ref.rpartition(":")
    if sep and head and not head.endswith(":") and tail:
        return head, tail
    return ref, None


@click.group()
def artifact() -> None:
    """Artifacts by name and version.

    An output named by `Annotated[T, "name"]` is the artifact `name`; any other output is
    `PIPELINE::STEP::OUTPUT`. Each run that produces one records its next version (1, 2, ...); a cached step
    reuses the version it had. `save_artifact(data, "name")` records one from anywhere.

    \b
    Examples:
      conveyor artifact list
      conveyor artifact list model --output json
      conveyor artifact describe model:3
    """


@artifact.command("list")
@click.argument("name", required=False)
@output_option
def list_(name: str | None, output: str) -> None:
    """List artifact versions, every named artifact's or the versions of NAME, oldest first.

    \b
    Examples:
      conveyor artifact list
      conveyor artifact list training_pipeline::trainer::output
    """
    from conveyor.client import Client

    versions = Client(get_ctx()).list_artifact_versions(name)
    if output == "json":
        emit([_json(a) for a in versions], lambda: None)
        return
    if not versions:
        say(f"No versions of artifact {name!r}." if name else "No named artifacts yet: run a pipeline, or "
            "save_artifact(data, \"name\").")
        return
    t = table("name", "version", "id", "type", "created", "produced by")
    for a in versions:
        producer = f"{a.producer_run_name} / {a.producer_step_name}" if a.producer_run_name else "save_artifact"
        t.add_row(_esc(a.name), a.version or "-", a.id[:8], _esc(a.data_type), fmt_time(a.created), _esc(producer))
    show(t)


@artifact.command("describe")
@click.argument("ref", metavar="NAME[:VERSION]|ID")
@output_option
def describe(ref: str, output: str) -> None:
    """Show one artifact version: NAME (its newest version), NAME:VERSION, or an artifact id.

    \b
    Examples:
      conveyor artifact describe model
      conveyor artifact describe model:2 --output json
    """
    from conveyor.client import Client
    from conveyor.exceptions import ConveyorError

    client = Client(get_ctx())
    name, version = _split_ref(ref)
    try:
        a = client.get_artifact_version(name, version)
    except ConveyorError as err:
        if version is None:
            raise
        try:
            a = client.get_artifact_version(ref)  # a name that itself ends in ":something"
        except ConveyorError:
            raise err from None
    if output == "json":
        emit(_json(a), lambda: None)
        return
    import json

    say(f"Artifact {a.name} version {a.version or '-'}", style="bold")
    producer = f"run {a.producer_run_name}, step {a.producer_step_name}" if a.producer_run_name else "save_artifact"
    say(f"  id: {a.id}\n  uri: {a.uri}\n  data type: {a.data_type}\n  materializer: {a.materializer}\n"
        f"  size: {a.size if a.size is not None else '-'} bytes\n  checksum: {a.checksum or '-'}\n"
        f"  created: {fmt_time(a.created)}\n  produced by: {producer}")
    if a.run_metadata:
        say("  metadata:\n" + "\n".join(f"    {k}: {json.dumps(v, ensure_ascii=False)}"
                                       for k, v in a.run_metadata.items()))
