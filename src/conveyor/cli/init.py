"""`conveyor init`: make the working directory a Conveyor project."""

from __future__ import annotations

import os
from pathlib import Path

import click

from conveyor.cli._common import mask_url, say, show
from conveyor.cli.stack import stacks_table


@click.command()
def init() -> None:
    """Create `.conveyor/` here and show what exists.

    The project holds the metadata store, the artifacts and the `default` stack.

    Running it again is harmless: it reports the existing project. CONVEYOR_PROJECT_DIR, when set,
    names the project directory instead of the working directory.

    \b
    Example:
      cd my-project && conveyor init
    """
    from conveyor.context import PROJECT_DIR_NAME, find_project_root, get_context
    from conveyor.utils.private import private_makedirs

    env = os.environ.get("CONVEYOR_PROJECT_DIR")
    root = Path(env).resolve() if env else Path.cwd().resolve()
    project_dir = root / PROJECT_DIR_NAME
    existed = project_dir.is_dir()
    enclosing = None if env else find_project_root(root.parent) if root.parent != root else None
    root.mkdir(parents=True, exist_ok=True)
    private_makedirs(project_dir)  # 0700: it holds the store, logs and job specs
    ctx = get_context()
    ctx.ensure_defaults()
    if existed:
        say(f"Conveyor project already initialised at {root}", style="bold")
    else:
        say(f"Initialised a Conveyor project at {root}", style="bold green")
        if enclosing is not None and (enclosing / PROJECT_DIR_NAME).is_dir():
            say(f"(it is nested inside the project at {enclosing}; commands run under {root} now use this one)")
    say(f"Metadata store: {mask_url(ctx.store_url)}")

    active = ctx.active_stack_name
    show(stacks_table(ctx))
    say(f"Active stack: {active}. Next: write a pipeline and run it, then `conveyor run list`.")
