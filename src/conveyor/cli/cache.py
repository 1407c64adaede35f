"""`conveyor cache clear`: stop earlier results from being reused, without deleting them."""

from __future__ import annotations

import click

from conveyor.cli._common import fail, get_ctx, say

__all__ = ["cache"]


@click.group()
def cache() -> None:
    """The step cache: which earlier results a run reuses instead of running a step again.

    A step is `cached` when a completed run of it had the same cache key: its code (the function, the helpers of
    its own module it uses, and the project modules it imports), its cache_version, parameters, input artifacts,
    outputs and the artifact store. Data files read at run time and installed package versions are not part of
    the key: clear the cache (or raise the step's cache_version) when those change. See docs/caching.md.

    \b
    Examples:
      conveyor cache clear --pipeline training --step train
      conveyor cache clear --all --yes
    """


def _scope(pipeline: str | None, step: str | None) -> str:
    parts = ([f"pipeline {pipeline!r}"] if pipeline else []) + ([f"step {step!r}"] if step else [])
    return " of " + ", ".join(parts) if parts else " of every pipeline"


@cache.command("clear")
@click.option("--pipeline", "-p", metavar="NAME", help="Only step runs of this pipeline.")
@click.option("--step", "-s", metavar="NAME", help="Only step runs of this step (its name in the run, as "
              "`conveyor run describe` shows it).")
@click.option("--all", "all_", is_flag=True, help="Every step run of every pipeline.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def clear(pipeline: str | None, step: str | None, all_: bool, yes: bool) -> None:
    """Make earlier step runs ineligible as cache hits; their artifacts and records stay.

    The next run of those steps executes them again, and its results are cached from then on. Nothing is
    deleted: earlier runs keep their status and their outputs still load. Asks for confirmation unless --yes.

    \b
    Examples:
      conveyor cache clear --pipeline training              # every step of pipeline training
      conveyor cache clear --pipeline training --step train
      conveyor cache clear --step load_data                 # that step name in every pipeline
      conveyor cache clear --all --yes
    """
    if all_ and (pipeline or step):
        fail("--all clears every pipeline's cache: give it alone, or use --pipeline/--step without --all")
    if not (all_ or pipeline or step):
        fail("say which cache to clear: --pipeline NAME and/or --step NAME, or --all for every pipeline")
    store = get_ctx().store
    scope = _scope(pipeline, step)
    count = store.clear_cache(pipeline=pipeline, step=step, dry_run=True)
    if count == 0:
        say(f"Nothing to clear: no cached results{scope}.")
        return
    if not yes:
        try:
            confirmed = click.confirm(f"Clear the cache of {count} completed step run(s){scope}? Their artifacts "
                                      "are kept; those steps run again next time", default=False)
        except click.Abort:
            fail("no answer to the confirmation (standard input is closed): pass --yes to clear without asking")
        if not confirmed:
            say("Nothing cleared.")
            return
    cleared = store.clear_cache(pipeline=pipeline, step=step)
    say(f"Cleared the cache of {cleared} completed step run(s){scope}: their next run executes them again. "
        "Their artifacts and records are kept.", style="green")
