"""Helpers the tests share (a module of its own: importing from a conftest is ambiguous with several of them)."""

from __future__ import annotations

from typing import Any


def add_step_operator(name: str, flavor: str, stack: str = "default", **config: Any) -> None:
    """Register a step operator (or update its config) and add it to a stack, as the CLI would."""
    from conveyor.config.base import validate_strict
    from conveyor.context import get_context

    ctx = get_context()
    ctx.ensure_defaults()
    cfg = validate_strict(ctx.registry.get("step_operator", flavor).config_class, dict(config), name)
    data = cfg.model_dump(exclude_unset=True, mode="json")
    if ctx.store.get_component("step_operator", name):
        ctx.store.update_component("step_operator", name, data)
        return
    cid = ctx.store.create_component("step_operator", name, flavor, data)
    record = ctx.store.get_stack(stack)
    ctx.store.set_stack_components(stack, [c["id"] for c in record["components"]] + [cid])


def assert_nothing_left(step_run: Any) -> None:
    """Neither the process the receipt names nor anything carrying the step run's id is still running."""
    from conveyor.utils.procs import alive, pids_with_marker

    assert pids_with_marker(f"--step_run_id {step_run.id}") == []
    pid = ((step_run.submission or {}).get("data") or {}).get("pid")
    if pid is not None:
        assert not alive(int(pid)), f"step process {pid} of {step_run.name} is still running"
