"""`conveyor stack ...`: stacks are one orchestrator, one artifact store, any number of step operators and at most
one container registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from conveyor.cli._common import (
    component_record,
    ARTIFACT_STORE,
    CONTAINER_REGISTRY,
    ORCHESTRATOR,
    STEP_OPERATOR,
    Kind,
    config_summary,
    config_values,
    emit,
    fail,
    get_ctx,
    note,
    output_option,
    say,
    show,
    table,
)
from conveyor.config.names import check_name

if TYPE_CHECKING:
    from conveyor.context import Context


def _stack(ctx: "Context", name: str) -> dict[str, Any]:
    record = ctx.store.get_stack(name)
    if record is None:
        known = ", ".join(ctx.store.list_stacks()) or "(none)"
        fail(f"no stack named {name!r}. Stacks: {known}. "
             f"Register one with `conveyor stack register {name} -o ORCHESTRATOR -a ARTIFACT_STORE [-s STEP_OPERATOR]`.")
    return record


def _split(record: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    by_type: dict[str, list[dict[str, Any]]] = {}
    for c in record["components"]:
        by_type.setdefault(c["type"], []).append(c)
    return by_type.get(ORCHESTRATOR.value, []), by_type.get(ARTIFACT_STORE.value, []), by_type.get(STEP_OPERATOR.value, [])


def _registries(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in record["components"] if c["type"] == CONTAINER_REGISTRY.value]


def stacks_table(ctx: "Context") -> Any:
    active = ctx.active_stack_name
    t = table("active", "stack", "orchestrator", "artifact store", "step operators (first = default)")
    for name in ctx.store.list_stacks():
        record = ctx.store.get_stack(name) or {"components": []}
        orch, store, ops = _split(record)
        t.add_row("*" if name == active else "", name, ", ".join(c["name"] for c in orch),
                  ", ".join(c["name"] for c in store), ", ".join(c["name"] for c in ops) or "-")
    return t


@click.group()
def stack() -> None:
    """Register, inspect and switch stacks.

    A stack holds one orchestrator, one artifact store and any number of step operators; the first
    step operator is the default for `@step(step_operator=True)`.

    \b
    Examples:
      conveyor stack register prod -o default -a default -s gpu -s spark
      conveyor stack set prod
      conveyor stack list
    """


@stack.command("register")
@click.argument("name")
@click.option("-o", "--orchestrator", "orchestrator", required=True, metavar="NAME", help="A registered orchestrator.")
@click.option("-a", "--artifact-store", "artifact_store", required=True, metavar="NAME", help="A registered artifact store.")
@click.option("-s", "--step-operator", "step_operators", multiple=True, metavar="NAME",
              help="A registered step operator; repeat for more. The first is the stack's default.")
@click.option("-c", "--container-registry", "container_registry", metavar="NAME",
              help="A registered container registry: container steps' images are pushed there before each run.")
@click.option("--set", "activate", is_flag=True, help="Make it the active stack too.")
def register(name: str, orchestrator: str, artifact_store: str, step_operators: tuple[str, ...],
             container_registry: str | None, activate: bool) -> None:
    """Register a stack NAME from components registered by name.

    \b
    Example:
      conveyor step-operator register gpu --flavor=local
      conveyor stack register prod -o default -a default -s gpu --set
    """
    check_name("stack", name)
    ctx = get_ctx()
    if ctx.store.get_stack(name) is not None:
        fail(f"a stack named {name!r} already exists: pick another name, or change it with "
             f"`conveyor stack update {name} ...`")
    dupes = sorted({s for s in step_operators if step_operators.count(s) > 1})
    if dupes:
        fail(f"step operator {dupes[0]!r} given twice: give each -s once")
    ids = [component_record(ctx, ORCHESTRATOR, orchestrator)["id"], component_record(ctx, ARTIFACT_STORE, artifact_store)["id"]]
    ids += [component_record(ctx, STEP_OPERATOR, s)["id"] for s in step_operators]
    if container_registry:
        ids.append(component_record(ctx, CONTAINER_REGISTRY, container_registry)["id"])
    ctx.store.create_stack(name, ids)
    say(f"Registered stack {name!r}: orchestrator {orchestrator!r}, artifact store {artifact_store!r}, "
        f"step operators {', '.join(repr(s) for s in step_operators) or '(none)'}"
        + (f", container registry {container_registry!r}" if container_registry else "") + ".", style="green")
    if activate:
        ctx.store.set_kv("active_stack", name)
        say(f"Active stack: {name!r}.")
    else:
        say(f"Use it with `conveyor stack set {name}`.")


@stack.command("update")
@click.argument("name")
@click.option("-s", "--step-operator", "add", multiple=True, metavar="NAME", help="Add a step operator (repeatable).")
@click.option("--remove-step-operator", "remove", multiple=True, metavar="NAME", help="Remove a step operator (repeatable).")
@click.option("--default-step-operator", "default", metavar="NAME",
              help="Make this step operator (in the stack or added now) the default one.")
@click.option("-o", "--orchestrator", "orchestrator", metavar="NAME", help="Replace the orchestrator.")
@click.option("-a", "--artifact-store", "artifact_store", metavar="NAME", help="Replace the artifact store.")
@click.option("-c", "--container-registry", "container_registry", metavar="NAME",
              help="Set (or replace) the container registry.")
@click.option("--remove-container-registry", "remove_registry", is_flag=True, help="Remove the container registry.")
def update(name: str, add: tuple[str, ...], remove: tuple[str, ...], default: str | None, orchestrator: str | None,
           artifact_store: str | None, container_registry: str | None, remove_registry: bool) -> None:
    """Change stack NAME: add or remove step operators, replace its orchestrator, artifact store or container
    registry.

    \b
    Examples:
      conveyor stack update prod -s spark
      conveyor stack update prod --remove-step-operator gpu
      conveyor stack update prod -a s3_store --default-step-operator spark
      conveyor stack update prod -c images
    """
    ctx = get_ctx()
    record = _stack(ctx, name)
    if not (add or remove or default or orchestrator or artifact_store or container_registry or remove_registry):
        fail("nothing to change: give -s NAME, --remove-step-operator NAME, --default-step-operator NAME, "
             "-o NAME, -a NAME, -c NAME or --remove-container-registry")
    if container_registry and remove_registry:
        fail("give either -c NAME or --remove-container-registry, not both")
    orch, store, ops = _split(record)
    registry_ids = [c["id"] for c in _registries(record)]
    orch_ids = [c["id"] for c in orch]
    store_ids = [c["id"] for c in store]
    op_names = [c["name"] for c in ops]
    op_ids = {c["name"]: c["id"] for c in ops}
    changes: list[str] = []
    if orchestrator:
        orch_ids = [component_record(ctx, ORCHESTRATOR, orchestrator)["id"]]
        changes.append(f"orchestrator -> {orchestrator!r}")
    if artifact_store:
        store_ids = [component_record(ctx, ARTIFACT_STORE, artifact_store)["id"]]
        changes.append(f"artifact store -> {artifact_store!r}")
    if container_registry:
        registry_ids = [component_record(ctx, CONTAINER_REGISTRY, container_registry)["id"]]
        changes.append(f"container registry -> {container_registry!r}")
    if remove_registry:
        if not registry_ids:
            note(f"stack {name!r} has no container registry")
        else:
            changes.append("removed the container registry")
        registry_ids = []
    for r in remove:
        if r not in op_names:
            fail(f"stack {name!r} has no step operator {r!r}; it has {', '.join(op_names) or '(none)'}")
        op_names.remove(r)
        changes.append(f"removed step operator {r!r}")
    for a in add:
        if a in op_names:
            note(f"step operator {a!r} is already in stack {name!r}")
            continue
        op_ids[a] = component_record(ctx, STEP_OPERATOR, a)["id"]
        op_names.append(a)
        changes.append(f"added step operator {a!r}")
    if default:
        if default not in op_names:
            fail(f"{default!r} is not a step operator of stack {name!r} ({', '.join(op_names) or 'none'}): "
                 f"add it with `-s {default}`")
        op_names.remove(default)
        op_names.insert(0, default)
        changes.append(f"default step operator -> {default!r}")
    ctx.store.set_stack_components(name, orch_ids + store_ids + [op_ids[n] for n in op_names] + registry_ids)
    if changes:
        say(f"Updated stack {name!r}: {'; '.join(changes)}.", style="green")
    say(f"Step operators of {name!r}: {', '.join(op_names) or '(none)'}"
        + (f" (default: {op_names[0]!r})" if op_names else ""))


def _component_json(ctx: "Context", kind: Kind, record: dict[str, Any]) -> dict[str, Any]:
    return {"id": record["id"], "name": record["name"], "flavor": record["flavor"],
            "configuration": config_values(ctx, kind, record)}


def stack_json(ctx: "Context", name: str, record: dict[str, Any], active: str) -> dict[str, Any]:
    """A stack for `--output json`: its components by type, step operators in order (the first is the default)."""
    orch, store, ops = _split(record)
    return {"id": record["id"], "name": name, "active": name == active,
            "orchestrator": _component_json(ctx, ORCHESTRATOR, orch[0]) if orch else None,
            "artifact_store": _component_json(ctx, ARTIFACT_STORE, store[0]) if store else None,
            "step_operators": [_component_json(ctx, STEP_OPERATOR, c) for c in ops],
            "default_step_operator": ops[0]["name"] if ops else None,
            "container_registry": next((_component_json(ctx, CONTAINER_REGISTRY, c) for c in _registries(record)), None),
            "created": record["created"], "updated": record["updated"]}


@stack.command("list")
@output_option
def list_(output: str) -> None:
    """List stacks; `*` marks the active one.

    \b
    Examples:
      conveyor stack list
      conveyor stack list --output json
    """
    ctx = get_ctx()
    active = ctx.active_stack_name
    records = [(name, ctx.store.get_stack(name)) for name in ctx.store.list_stacks()]
    emit([stack_json(ctx, name, record, active) for name, record in records if record is not None],
         lambda: show(stacks_table(ctx)))


@stack.command("describe")
@click.argument("name", required=False)
@output_option
def describe(name: str | None, output: str) -> None:
    """Show stack NAME (default: the active stack): each component, its flavor and its configuration.

    \b
    Examples:
      conveyor stack describe prod
      conveyor stack describe prod --output json
    """
    ctx = get_ctx()
    active = ctx.active_stack_name
    name = name or active
    record = _stack(ctx, name)

    def render() -> None:
        say(f"Stack {name!r}" + (" (active)" if name == active else ""), style="bold")
        orch, store, ops = _split(record)
        t = table("component type", "name", "flavor", "configuration")
        for kind, comps in ((ORCHESTRATOR, orch), (ARTIFACT_STORE, store), (STEP_OPERATOR, ops),
                            (CONTAINER_REGISTRY, _registries(record))):
            for i, c in enumerate(comps):
                label = kind.label + (" (default)" if kind is STEP_OPERATOR and i == 0 else "")
                t.add_row(label, c["name"], c["flavor"], config_summary(ctx, kind, c))
        if not ops:
            t.add_row(STEP_OPERATOR.label, "-", "", f"none: add one with `conveyor stack update {name} -s NAME`")
        show(t)

    emit(stack_json(ctx, name, record, active), render)


@stack.command("set")
@click.argument("name")
def set_(name: str) -> None:
    """Make stack NAME the active one: pipelines run on it from now on.

    \b
    Example:
      conveyor stack set prod
    """
    import os

    ctx = get_ctx()
    _stack(ctx, name)
    ctx.store.set_kv("active_stack", name)
    say(f"Active stack: {name!r}.", style="green")
    env = os.environ.get("CONVEYOR_STACK")
    if env and env != name:
        note(f"CONVEYOR_STACK={env} is set in this environment and takes precedence over the active stack")


@stack.command("delete")
@click.argument("name")
def delete(name: str) -> None:
    """Delete stack NAME (its components stay registered). The active stack cannot be deleted.

    \b
    Example:
      conveyor stack set default && conveyor stack delete prod
    """
    ctx = get_ctx()
    _stack(ctx, name)
    stored_active = ctx.store.get_kv("active_stack") or "default"
    if name in (stored_active, ctx.active_stack_name):
        others = [s for s in ctx.store.list_stacks() if s != name]
        hint = f"`conveyor stack set {others[0]}`" if others else "`conveyor stack register OTHER ...` and `conveyor stack set OTHER`"
        fail(f"stack {name!r} is the active stack: switch to another first with {hint}, then delete it")
    ctx.store.delete_stack(name)
    say(f"Deleted stack {name!r}.", style="green")
