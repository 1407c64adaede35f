"""`conveyor pipeline ...`: run a pipeline from the shell, list pipelines (the work is done by the library)."""

from __future__ import annotations

import click

from conveyor.cli._common import emit, fail, fmt_time, get_ctx, output_option, say, show, table

__all__ = ["pipeline"]


@click.group()
def pipeline() -> None:
    """Run pipelines from the shell and list them.

    \b
    Examples:
      conveyor pipeline run pipelines.training.training_pipeline --config run.yaml
      conveyor pipeline run train.py:training_pipeline
      conveyor pipeline list --output json
    """


@pipeline.command("run")
@click.argument("source")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), metavar="PATH",
              help="A YAML run config (run_name, enable_cache, parameters, settings, steps); see docs/pipelines.md.")
def run_(source: str, config_path: str | None) -> None:
    """Run the pipeline SOURCE names, as `pipeline.with_options(config_path=...)()` would.

    SOURCE is `package.module.pipeline_name` (ZenML's form), `module:attr` or `path/to/file.py:attr`, found from
    the current directory. Importing the module does not run a pipeline it calls at module level.
    Exits non-zero when the run fails.
    """
    from conveyor.exceptions import RunFailedError
    from conveyor.pipelines.loader import load_pipeline

    get_ctx()
    found = load_pipeline(source)
    configured = found.with_options(config_path=config_path) if config_path else found
    try:
        run = configured()
    except RunFailedError as err:
        fail(str(err))
    if run is None:  # only in a step's process (CONVEYOR_STEP_PROCESS set): see pipelines/run_guard.py
        fail("the pipeline was not run: this shell is marked as a step's process (CONVEYOR_STEP_PROCESS is set); "
             "unset it and run again")
    say(f"Run {run.name} of pipeline {run.pipeline_name} is {run.status}.", style="green")


@pipeline.command("list")
@output_option
def list_(output: str) -> None:
    """List pipelines with how many runs each has and its last run's name, status and start.

    \b
    Examples:
      conveyor pipeline list
      conveyor pipeline list --output json | jq -r '.[] | select(.last_status == "failed") | .name'
    """
    from conveyor.execution.liveness import shown_status

    ctx = get_ctx()
    rows = []
    for p in ctx.store.pipeline_summaries():
        last = p["last_run"]
        rows.append({"id": p["id"], "name": p["name"], "runs": p["run_count"],
                     "last_run": last["name"] if last else None,
                     "last_status": shown_status(last, ctx.store) if last else None,
                     "last_run_start": last["start_time"] if last else None, "created": p["created"]})

    def render() -> None:
        if not rows:
            say("No pipelines yet: run one (`conveyor pipeline run SOURCE`, or call it in a script).")
            return
        t = table("pipeline", "runs", "last run", "last status", "started")
        for r in rows:
            t.add_row(_esc(r["name"]), str(r["runs"]), _esc(r["last_run"] or "-"), r["last_status"] or "-",
                      fmt_time(r["last_run_start"]))
        show(t)

    emit(rows, render, output)


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)
