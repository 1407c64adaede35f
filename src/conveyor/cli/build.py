"""`conveyor build PIPELINE`: build (or find up to date) the container images a pipeline's steps run in."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import click

from conveyor.cli._common import fail, get_ctx, say


def load_pipeline(ref: str) -> Any:
    """`path/to/file.py:name`, `package.module:name` or `package.module.name` -> the @pipeline object."""
    target, sep, attr = ref.rpartition(":") if ":" in ref else ref.rpartition(".")
    if not sep or not target or not attr:
        fail(f"PIPELINE {ref!r}: write it as path/to/file.py:pipeline_name or package.module:pipeline_name")
    if target.endswith(".py"):
        path = Path(target).resolve()
        if not path.is_file():
            fail(f"PIPELINE {ref!r}: no file {path}")
        sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module  # steps are referenced by this module name, as when run as a script
        from conveyor.pipelines.run_guard import ModuleStopped, importing_user_code

        with importing_user_code():  # a module-level pipeline call ends the module there instead of running
            try:
                spec.loader.exec_module(module)
            except ModuleStopped:
                pass
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        from conveyor.pipelines.main_script import import_user_module

        try:
            module = import_user_module(target)
        except ImportError as err:
            fail(f"PIPELINE {ref!r}: cannot import {target!r}: {err}")
    obj = getattr(module, attr, None)
    if obj is None or not hasattr(obj, "compile"):
        fail(f"PIPELINE {ref!r}: {target} has no pipeline named {attr!r}")
    return obj


@click.command("build")
@click.argument("pipeline_ref", metavar="PIPELINE")
@click.option("--stack", "stack_name", default=None, help="stack to build for (default: the active one)")
@click.option("-v", "--verbose", is_flag=True, help="show the engine's build output")
def build(pipeline_ref: str, stack_name: str | None, verbose: bool) -> None:
    """Build the container images PIPELINE's steps need (skipped when an image with the same content hash exists),
    and push them to the stack's container registry when it has one (skipped when the registry has the tag).

    \b
    Examples:
      conveyor build training.py:training_pipeline
      conveyor build my_package.pipelines:nightly --stack prod
    """
    from conveyor.execution.launcher import build_step_info
    from conveyor.execution.run import resolve_steps

    snapshot = load_pipeline(pipeline_ref).compile()
    ctx = get_ctx()
    stack = ctx.load_stack(stack_name)
    store_root = stack.artifact_store.artifact_store().root
    images: dict[str, tuple[bool, list[str]]] = {}
    for name, resolved in resolve_steps(snapshot, stack).items():
        if resolved.operator is None:
            continue
        operator = stack.step_operator(resolved.operator)
        build_image = getattr(operator, "build_image", None)  # a container flavor (step_operators/container.py)
        if build_image is None:
            continue
        info = build_step_info(stack, snapshot, name, operator, run_id="build", run_name="build",
                               step_run_id="build", attempt=1, attempt_uri="")
        log = (lambda text: click.echo(text, nl=False, err=True)) if verbose else None
        image = build_image(info, store_root=store_root,
                            code_root=snapshot.step_spec(name)["source"].get("code_root"), log=log)
        if image is None:  # it runs in an environment the backend provides
            continue
        ref, built = image
        was_built, steps = images.get(ref, (False, []))
        images[ref] = (was_built or built, [*steps, name])
    if not images:
        say(f"No step of pipeline {snapshot.pipeline_name!r} runs in a container: nothing to build.")
        return
    for ref, (built, steps) in images.items():
        say(f"{ref}  {'built' if built else 'up to date'}  (steps: {', '.join(steps)})")
    if not any(built for built, _ in images.values()):
        say("All images up to date.")
