"""`conveyor run ...`: list, inspect, follow and stop pipeline runs (reads through the Client; steering through the store)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from conveyor.cli._common import (emit, fail, fmt_time, get_ctx, note, output_option, say, show, table,
                                  utcnow)
from conveyor.enums import SUCCESSFUL_STATUSES, StepStatus
from conveyor.execution.liveness import shown_status
from conveyor.utils.durations import fmt_duration

if TYPE_CHECKING:
    from conveyor.client import AttemptView, PipelineRun, StepRunView
    from conveyor.context import Context

#: `run list --status` choices: stored run statuses (plain values: click matches enum members by name), and
#: "abandoned", a running run whose orchestrator is gone (shown, never stored)
ABANDONED = "abandoned"
STATUSES = (*(s.value for s in (StepStatus.RUNNING, StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.STOPPED)),
            ABANDONED)
_STYLES = {StepStatus.COMPLETED: "green", StepStatus.CACHED: "cyan", StepStatus.RUNNING: "yellow",
           StepStatus.PENDING: "dim", StepStatus.FAILED: "red", StepStatus.STOPPED: "magenta", StepStatus.SKIPPED: "dim",
           ABANDONED: "bold red"}


def styled(status: str) -> str:
    style = _STYLES.get(status)
    return f"[{style}]{status}[/]" if style else status


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


# -- helpers ---------------------------------------------------------------------------------------------
def _get_run(ctx: "Context", ref: str) -> "PipelineRun":
    from conveyor.client import Client

    return Client(ctx).get_pipeline_run(ref)


def where(step: "StepRunView") -> str:
    if step.status == StepStatus.CACHED:
        return "cache"
    if step.config.step_operator:
        flavor = f" ({step.config.step_operator_flavor})" if step.config.step_operator_flavor else ""
        return f"{step.config.step_operator}{flavor}"
    return "in-process"


def _first_line(text: str | None, limit: int = 160) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _elapsed(start: Any, end: Any) -> str:
    if start is None:
        return "-"
    return fmt_duration((end or utcnow()) - start)


def _seconds(start: Any, end: Any) -> float | None:
    """A duration for `--output json`: so far, while it runs."""
    return None if start is None else ((end or utcnow()) - start).total_seconds()


def run_json(r: "PipelineRun", status: str) -> dict[str, Any]:
    """A run for `--output json` (without its steps): the columns of `run list`, as values."""
    return {"id": r.id, "name": r.name, "pipeline": r.pipeline_name, "status": status, "stack": r.stack_name,
            "start_time": r.start_time, "end_time": r.end_time, "duration_s": _seconds(r.start_time, r.end_time),
            "host": r.host, "pid": r.pid, "error": r.error}


def step_json(name: str, s: "StepRunView") -> dict[str, Any]:
    """A step run for `run describe --output json`: the columns of its table, as values."""
    return {"name": name, "id": s.id, "status": s.status, "where": where(s), "step_operator": s.config.step_operator,
            "step_operator_flavor": s.config.step_operator_flavor, "start_time": s.start_time, "end_time": s.end_time,
            "duration_s": _seconds(s.start_time, s.end_time) if s.status != StepStatus.PENDING else None,
            "attempt": s.attempt, "error": s.error, "failure_kind": s.failure_kind, "traceback": s.traceback,
            "cached_from": s.cached_from, "logs_uri": s.logs_uri,
            "inputs": {k: a.id for k, a in s.inputs.items()},
            "outputs": {k: {"id": a.id, "uri": a.uri, "data_type": a.data_type, "artifact": a.name,
                            "version": a.version, "run_metadata": a.run_metadata} for k, a in s.outputs.items()},
            "run_metadata": s.run_metadata, "upstream": list(s.upstream),
            "attempts": [attempt_json(a) for a in s.attempts]}


def attempt_json(a: "AttemptView") -> dict[str, Any]:
    """One attempt for `--output json`: every recorded field, and its phases' durations in seconds."""
    from conveyor.cli._common import to_jsonable

    return {**to_jsonable(a), "queued_s": _total(a.queued_for), "running_s": _total(a.ran_for),
            "publishing_s": _total(a.publishing_for)}


def _total(d: Any) -> float | None:
    return None if d is None else d.total_seconds()


# -- group -----------------------------------------------------------------------------------------------
@click.group()
def run() -> None:
    """Inspect, follow and stop pipeline runs.

    A run is named by its name (`my_pipeline-20250101-120000-ab12`), its id, or an id prefix.

    \b
    Examples:
      conveyor run list --status failed
      conveyor run describe my_pipeline-20250101-120000-ab12
      conveyor run logs RUN train --follow
      conveyor run stop RUN
    """


@run.command("list")
@click.option("-p", "--pipeline", metavar="NAME", help="Only runs of this pipeline.")
@click.option("-s", "--status", type=click.Choice(STATUSES, case_sensitive=False), help="Only runs with this status.")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="At most this many runs.")
@output_option
def list_(pipeline: str | None, status: str | None, limit: int, output: str) -> None:
    """List runs, newest first. A `running` run whose orchestrator is gone (its process no longer holds the
    run's lease) shows as `abandoned`; a suspended (Ctrl-Z) orchestrator still owns its run.

    \b
    Examples:
      conveyor run list
      conveyor run list --pipeline training_pipeline --status failed -n 5
      conveyor run list --output json
    """
    from conveyor.client import Client

    ctx = get_ctx()
    client = Client(ctx)
    if status in (StepStatus.RUNNING, ABANDONED):
        runs = [r for r in client.list_pipeline_runs(pipeline, StepStatus.RUNNING, None)
                if shown_status(r) == status][:limit]
    else:
        runs = client.list_pipeline_runs(pipeline, status, limit)
    if output == "json":
        emit([run_json(r, shown_status(r)) for r in runs], lambda: None)
        return
    if not runs:
        say(f"No {status + ' ' if status else ''}runs{f' of pipeline {pipeline!r}' if pipeline else ''}.")
        return
    t = table("run", "id", "pipeline", "status", "started", "duration", "stack")
    for r in runs:
        t.add_row(_esc(r.name), r.id[:8], _esc(r.pipeline_name), styled(shown_status(r)), fmt_time(r.start_time),
                  _elapsed(r.start_time, r.end_time), _esc(r.stack_name))
    show(t)


@run.command("describe")
@click.argument("run_ref", metavar="RUN")
@click.option("--dag", is_flag=True,
              help="Draw the run's DAG as text instead: steps in layers top-down, each with its status, where it "
                   "ran and the steps it waits for; a fan-out of more than 20 siblings is one line of counts.")
@output_option
def describe(run_ref: str, dag: bool, output: str) -> None:
    """Show run RUN: each step's status, where it ran (step operator or in-process), duration, attempt and
    error; then every attempt: its backend job id, the host it ran on, its outcome and how long it was queued
    (with the backend's reason), running and publishing its outputs; then the failing steps' tracebacks.

    \b
    Examples:
      conveyor run describe my_pipeline-20250101-120000-ab12
      conveyor run describe latest --dag
      conveyor run describe my_pipeline-20250101-120000-ab12 --output json
    """
    ctx = get_ctx()
    r = _get_run(ctx, run_ref)
    status = shown_status(r)
    if output == "json":
        emit({**run_json(r, status), "run_metadata": r.run_metadata,
              "steps": [step_json(name, s) for name, s in r.steps.items()]}, lambda: None)
        return
    if dag:
        from conveyor.cli.dag_text import DagNode, render_dag

        nodes = [DagNode(name, str(s.status), where(s), s.upstream) for name, s in r.steps.items()]
        _write(render_dag(nodes, title=f"Run {r.name} ({status})") + "\n")
        return
    say(f"Run {r.name}", style="bold")
    show(f"  id: {r.id}\n  pipeline: {_esc(r.pipeline_name)}\n  status: {styled(status)}\n"
         f"  stack: {_esc(r.stack_name)}\n  started: {fmt_time(r.start_time)}\n"
         f"  duration: {_elapsed(r.start_time, r.end_time)}" + (f"\n  host: {r.host} (pid {r.pid})" if r.host else ""))
    if status == "abandoned":
        note(f"its orchestrator is gone (last heartbeat {fmt_time(r.heartbeat)}): "
             f"`conveyor run stop {r.name}` cancels what it left running and marks it stopped")
    t = table("step", "status", "where", "duration", "attempt", "error")
    for name, s in r.steps.items():
        t.add_row(_esc(name), styled(s.status), _esc(where(s)),
                  _elapsed(s.start_time, s.end_time) if s.status != StepStatus.PENDING else "-",
                  str(s.attempt or "-"), _esc(_first_line(s.error)))
    show(t)
    _show_attempts(r)
    _show_metadata(r)
    for name, s in r.steps.items():
        if s.status != StepStatus.FAILED:
            continue
        kind = f" ({s.failure_kind})" if s.failure_kind else ""
        say(f"\nStep {name!r} failed{kind} on attempt {s.attempt}: {s.error or ''}".rstrip(), style="bold red")
        if s.traceback:
            say("Traceback of the step:")
            say(s.traceback.rstrip())
        if s.logs_uri:
            say(f"Logs: `conveyor run logs {r.name} {name}`")


def _phase(d: Any, reason: str | None = None) -> str:
    return "-" if d is None else fmt_duration(d) + (f" ({reason})" if reason else "")


def _show_attempts(r: "PipelineRun") -> None:
    """Every attempt of every step that ran: where (backend job id, host), its outcome, and its phases."""
    rows = [(name, a) for name, s in r.steps.items() for a in s.attempts]
    if not rows:
        return
    say("\nAttempts:", style="bold")
    t = table("attempt", "outcome", "backend job", "host", "queued", "running", "publishing")
    for name, a in rows:
        outcome = styled(str(a.status)) + (f" ({_esc(str(a.failure_kind))})" if a.failure_kind else "")
        job = a.backend_job_id or ("in-process" if a.operator is None else "-")
        t.add_row(f"{_esc(name)} #{a.number}", outcome, _esc(job), _esc(a.host or "-"),
                  _esc(_phase(a.queued_for, a.queue_reason)), _phase(a.ran_for), _phase(a.publishing_for))
    show(t)


def _show_metadata(r: "PipelineRun") -> None:
    """What `log_metadata` attached to the run, each step and each output, and each output's artifact version."""
    import json

    def lines(values: dict[str, Any], indent: str) -> str:
        return "\n".join(f"{indent}{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in values.items())

    if r.run_metadata:
        say("\nRun metadata:", style="bold")
        say(lines(r.run_metadata, "  "))
    for name, s in r.steps.items():
        versions = [(o, a) for o, a in s.outputs.items() if a.version or a.run_metadata]
        if not (s.run_metadata or versions):
            continue
        say(f"\nStep {name!r}:", style="bold")
        if s.run_metadata:
            say("  metadata:\n" + lines(s.run_metadata, "    "))
        for output, a in versions:
            say(f"  output {output!r}: artifact {a.name!r}" + (f" version {a.version}" if a.version else ""))
            if a.run_metadata:
                say(lines(a.run_metadata, "    "))


# -- logs ------------------------------------------------------------------------------------------------
def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@run.command("logs")
@click.argument("run_ref", metavar="RUN")
@click.argument("step", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until the step (or run) ends.")
def logs(run_ref: str, step: str | None, follow: bool) -> None:
    """Print the stored output of STEP of run RUN, or of every step with a header each.

    \b
    Examples:
      conveyor run logs RUN train
      conveyor run logs RUN train --follow
      conveyor run logs RUN
    """
    from conveyor.client import Client
    from conveyor.execution.steering import check_step, read_log, run_artifact_store

    ctx = get_ctx()
    r = _get_run(ctx, run_ref)
    names = check_step(r.name, list(r.steps), step)
    if follow:
        for chunk in Client(ctx).follow_log_events(r.id, step):
            if chunk.attempt is not None:
                note(f"--- {chunk.step}: attempt {chunk.attempt} ---")
            elif chunk.abandoned:
                note(f"run {r.name} is abandoned (its orchestrator is gone); stopped following")
            else:
                _write(chunk.text)
        return
    store = run_artifact_store(ctx, r.stack_name)
    for name in names:
        s = r.steps[name]
        content = read_log(store, s.logs_uri)
        if step is None:
            say(f"==> {name} ({s.status}, {where(s)}) <==", style="bold")
        if content:
            _write(content if content.endswith("\n") else content + "\n")
        else:
            why = {StepStatus.CACHED: "cached: it did not run", StepStatus.PENDING: "not started",
                   StepStatus.SKIPPED: "skipped: it did not run"}
            say(f"(no output{': ' + why[s.status] if s.status in why else ''})", style="dim")


# -- stop ------------------------------------------------------------------------------------------------
@run.command("stop")
@click.argument("run_ref", metavar="RUN")
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=15.0, show_default=True,
              help="Seconds to wait for the run to stop.")
def stop(run_ref: str, wait_s: float) -> None:
    """Stop run RUN: its orchestrator cancels its steps, and every step's backend job is cancelled
    through its receipt. A run whose orchestrator is gone is marked stopped here.

    \b
    Example:
      conveyor run stop my_pipeline-20250101-120000-ab12
    """
    from conveyor.client import Client

    ctx = get_ctx()
    client = Client(ctx)
    r = client.get_pipeline_run(run_ref)
    if r.status != StepStatus.RUNNING:
        say(f"Run {r.name} is already {r.status}: nothing to stop.")
        return
    say(f"Stop requested for run {r.name}.")
    done = client.stop_run(r.id, wait_s=wait_s, on_message=lambda message: say(f"  {message}"))
    if done.marked_by_stop:
        say("Its orchestrator was gone: marked the run and its unfinished steps stopped.")
    final = client.get_pipeline_run(r.id)
    t = table("step", "status", "where")
    for name, s in final.steps.items():
        t.add_row(_esc(name), styled(s.status), _esc(where(s)))
    show(t)
    say(f"Run {final.name} is {final.status}.", style="green" if final.status == StepStatus.STOPPED else None)


# -- resume ----------------------------------------------------------------------------------------------
@run.command("resume")
@click.argument("run_ref", metavar="RUN")
def resume(run_ref: str) -> None:
    """Finish run RUN after its orchestrator died (an `abandoned` run), failed or was stopped.

    Completed and cached steps are not run again. A step whose backend job is still known is followed
    through its submission receipt, never submitted twice; a step whose job is gone, and every step
    that had not finished, runs again as a new attempt. Runs in this shell, like the original run.

    \b
    Example:
      conveyor run resume my_pipeline-20250101-120000-ab12
    """
    from conveyor.client import Client
    from conveyor.exceptions import RunFailedError

    client = Client(get_ctx())
    r = client.get_pipeline_run(run_ref)
    done = [n for n, s in r.steps.items() if s.status in SUCCESSFUL_STATUSES]
    say(f"Resuming run {r.name} ({shown_status(r)}): {len(done)} of {len(r.steps)} step(s) already done.")
    try:
        final = client.resume_run(r.id)
    except RunFailedError as err:
        fail(str(err))
    say(f"Run {final.name} is {final.status}.", style="green")


# -- delete ----------------------------------------------------------------------------------------------
@run.command("delete")
@click.argument("run_ref", metavar="RUN")
@click.option("--artifacts", "with_artifacts", is_flag=True,
              help="Also delete the artifacts only this run uses (records and files); ones another run uses stay.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def delete(run_ref: str, with_artifacts: bool, yes: bool) -> None:
    """Delete run RUN's records (steps, links, metadata), and with --artifacts its artifacts.

    A run that is still running is refused: stop it first (`conveyor run stop RUN`). An artifact a later run
    still uses (a cache hit links the very same artifact) is kept and listed.

    \b
    Examples:
      conveyor run delete my_pipeline-20250101-120000-ab12
      conveyor run delete RUN --artifacts -y
    """
    from conveyor.execution.run_deletion import delete_pipeline_run

    ctx = get_ctx()
    r = _get_run(ctx, run_ref)
    if not yes:
        what = "its records and the artifacts only it uses" if with_artifacts else "its records (artifacts stay)"
        click.confirm(f"Delete run {r.name}: {what}?", abort=True, err=True)
    done = delete_pipeline_run(ctx, r.id, delete_artifacts=with_artifacts)
    say(f"Deleted run {done.run_name}.")
    if with_artifacts:
        say(f"Deleted {len(done.deleted_artifacts)} artifact(s).")
        for kept in done.kept_artifacts:
            note(f"Kept artifact {kept.id[:8]} ({kept.uri}): run(s) {', '.join(kept.used_by)} still use it.")
        for failed in done.files_not_removed:
            note(f"Could not remove {failed}")


# -- report ----------------------------------------------------------------------------------------------
@run.command("report")
@click.argument("run_ref", metavar="RUN")
@click.option("-o", "--output-file", "output_file", type=click.Path(dir_okay=False, writable=True), required=True,
              help="The HTML file to write (e.g. run.html).")
def report(run_ref: str, output_file: str) -> None:
    """Write run RUN's page as one self-contained HTML file: its DAG, timeline, totals and every step's log,
    with nothing loaded from a server or the network (for CI artifacts, or to share). Needs Jinja2
    (`pip install 'conveyor[dashboard]'`).

    \b
    Example:
      conveyor run report my_pipeline-20250101-120000-ab12 -o run.html
    """
    import importlib.util
    from pathlib import Path

    from conveyor.client import Client

    if importlib.util.find_spec("jinja2") is None:
        fail("`conveyor run report` needs Jinja2: pip install 'conveyor[dashboard]'")
    from conveyor.dashboard.report import write_report

    size = write_report(Client(get_ctx()), run_ref, Path(output_file))
    say(f"Wrote {output_file} ({size / 1024:.0f} KiB).")
