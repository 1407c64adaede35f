"""`conveyor step-operator|orchestrator|artifact-store ...`: one group per component type, built by one factory."""

from __future__ import annotations

from typing import Any

import click

from conveyor.cli._common import (
    component_record,
    KINDS,
    STEP_OPERATOR,
    Kind,
    config_for_display,
    config_summary,
    config_to_store,
    fail,
    get_ctx,
    parse_field_args,
    say,
    show,
    stacks_using,
    table,
    validate_config,
)
from conveyor.config.names import check_name

_EXAMPLES = {
    "step_operator": ("gpu", "local", "--pending_timeout=10m --memory_enforcement=rlimit", "--pending_timeout=1h"),
    "orchestrator": ("fast", "local", "--max_parallelism=4", "--max_parallelism=8"),
    "artifact_store": ("shared", "local", "--path=/mnt/shared/artifacts", "--path=/mnt/other"),
}

_EXTRA_ARGS = {"ignore_unknown_options": True, "allow_extra_args": True}


def _name_and_fields(kind: Kind, args: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    positionals, fields = parse_field_args(args)
    if not positionals:
        fail(f"missing the {kind.label}'s NAME: `conveyor {kind.cli} register NAME --flavor=FLAVOR --field=value`")
    if len(positionals) > 1:
        fail(f"unexpected argument(s) {' '.join(positionals[1:])!r}: give one NAME, and config fields as --field=value")
    return positionals[0], fields


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def make_group(kind: Kind) -> click.Group:
    """The register/list/describe/update/delete/flavor commands for one component type."""
    ex_name, ex_flavor, ex_fields, ex_update = _EXAMPLES[kind.value]

    @click.group(kind.cli, help=f"""Register and manage {kind.label}s.

    {_a(kind.label).capitalize()} is a component of a stack: register it here, then add it to a stack.

    \b
    Examples:
      conveyor {kind.cli} flavor list
      conveyor {kind.cli} register {ex_name} --flavor={ex_flavor} {ex_fields}
      conveyor {kind.cli} describe {ex_name}
    """)
    def group() -> None:
        pass

    @group.command("register", context_settings=_EXTRA_ARGS, help=f"""Register {_a(kind.label)} NAME of a flavor.

    Config fields are written exactly as in the flavor's config class, as --field_name=value or
    --field_name value; lists and objects as JSON. The config is validated before anything is saved:
    an unknown field is an error that lists the valid ones (see `conveyor {kind.cli} flavor list`).

    \b
    Example:
      conveyor {kind.cli} register {ex_name} --flavor={ex_flavor} {ex_fields}
    """)
    @click.option("-f", "--flavor", required=True, help="The flavor (see `flavor list`).")
    @click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="NAME [--FIELD=VALUE]...")
    def register(flavor: str, args: tuple[str, ...]) -> None:
        name, fields = _name_and_fields(kind, args)
        check_name(kind.label, name)
        ctx = get_ctx()
        if ctx.store.get_component(kind.value, name) is not None:
            fail(f"a {kind.label} named {name!r} already exists: pick another name, or change it with "
                 f"`conveyor {kind.cli} update {name} --field=value`")
        flavor_obj = ctx.registry.get(kind.value, flavor)
        model = validate_config(flavor_obj.config_class, fields, f"{kind.label} {name!r} (flavor {flavor!r})")
        ctx.store.create_component(kind.value, name, flavor, config_to_store(model, fields))
        say(f"Registered {kind.label} {name!r} (flavor {flavor!r}).", style="green")
        if kind is STEP_OPERATOR:
            say(f"Add it to a stack with `conveyor stack update {ctx.active_stack_name} -s {name}`, then use it with "
                f"@step(step_operator={name!r}).")

    @group.command("list", help=f"""List registered {kind.label}s, their flavor, configuration and stacks.

    \b
    Example:
      conveyor {kind.cli} list
    """)
    def list_() -> None:
        ctx = get_ctx()
        records = ctx.store.list_components(kind.value)
        if not records:
            say(f"No {kind.label}s. Register one with `conveyor {kind.cli} register NAME --flavor=FLAVOR`.")
            return
        t = table("name", "flavor", "configuration", "stacks")
        for r in records:
            t.add_row(r["name"], r["flavor"], config_summary(ctx, kind, r), ", ".join(stacks_using(ctx, r["id"])) or "-")
        show(t)

    @group.command("describe", help=f"""Show {kind.label} NAME: flavor, every config field, and the stacks using it.

    \b
    Example:
      conveyor {kind.cli} describe {ex_name}
    """)
    @click.argument("name")
    def describe(name: str) -> None:
        ctx = get_ctx()
        r = component_record(ctx, kind, name)
        flavor = ctx.registry.get(kind.value, r["flavor"])
        origin = ctx.registry.sources(_ctype(kind)).get(r["flavor"], ("", "?"))[1]
        say(f"{kind.label.capitalize()} {name!r}", style="bold")
        say(f"flavor: {r['flavor']} ({origin}){' - ' + flavor.description if flavor.description else ''}")
        say(f"stacks: {', '.join(stacks_using(ctx, r['id'])) or '(none)'}")
        t = table("field", "value", "", "description")
        fields = flavor.config_class.model_fields
        for field, value, is_default in config_for_display(flavor.config_class, r["config"] or {}):
            t.add_row(field, value, "(default)" if is_default else "", fields[field].description or "")
        show(t)

    @group.command("update", context_settings=_EXTRA_ARGS, help=f"""Change config fields of {kind.label} NAME.

    The new fields are merged into the existing config, and the result is validated before it is saved.

    \b
    Example:
      conveyor {kind.cli} update {ex_name} {ex_update}
    """)
    @click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="NAME --FIELD=VALUE...")
    def update(args: tuple[str, ...]) -> None:
        name, fields = _name_and_fields(kind, args)
        if "flavor" in fields:
            fail(f"the flavor of a {kind.label} cannot change: `conveyor {kind.cli} delete {name}` and register it again")
        if not fields:
            fail(f"nothing to change: give config fields, e.g. `conveyor {kind.cli} update {name} --field=value`")
        ctx = get_ctx()
        r = component_record(ctx, kind, name)
        flavor = ctx.registry.get(kind.value, r["flavor"])
        merged = {**(r["config"] or {}), **fields}
        model = validate_config(flavor.config_class, merged, f"{kind.label} {name!r} (flavor {r['flavor']!r})")
        ctx.store.update_component(kind.value, name, config_to_store(model, merged))
        say(f"Updated {kind.label} {name!r}: {', '.join(f'{k}={v}' for k, v in fields.items())}.", style="green")

    @group.command("delete", help=f"""Delete {kind.label} NAME; refused while a stack uses it.

    \b
    Example:
      conveyor {kind.cli} delete {ex_name}
    """)
    @click.argument("name")
    def delete(name: str) -> None:
        ctx = get_ctx()
        r = component_record(ctx, kind, name)
        used = stacks_using(ctx, r["id"])
        if used:
            how = (f"`conveyor stack update {used[0]} --remove-step-operator {name}`" if kind is STEP_OPERATOR
                   else f"`conveyor stack update {used[0]} -{'o' if kind.value == 'orchestrator' else 'a'} OTHER`")
            fail(f"{kind.label} {name!r} is used by stack(s) {', '.join(used)}: remove it from them first ({how}) "
                 "or delete those stacks (`conveyor stack delete NAME`)")
        ctx.store.delete_component(kind.value, name)
        say(f"Deleted {kind.label} {name!r}.", style="green")

    @group.group("flavor", help=f"""List and register {kind.label} flavors.

    \b
    Examples:
      conveyor {kind.cli} flavor list
      conveyor {kind.cli} flavor register my_pkg.flavors.MyFlavor
    """)
    def flavor_group() -> None:
        pass

    @flavor_group.command("list", help=f"""List {kind.label} flavors: built-in, from installed packages
    (the `conveyor.flavors` entry points), and custom ones registered with `flavor register`.

    \b
    Example:
      conveyor {kind.cli} flavor list
    """)
    def flavor_list() -> None:
        from conveyor.exceptions import ConveyorError

        ctx = get_ctx()
        t = table("flavor", "origin", "description", "source")
        for fname, (source, origin) in sorted(ctx.registry.sources(_ctype(kind)).items()):
            try:
                description = ctx.registry.get(kind.value, fname).description
            except ConveyorError as err:
                description = f"(unavailable: {err})"
            t.add_row(fname, origin, description, source)
        show(t)

    @flavor_group.command("register", help=f"""Register a custom {kind.label} flavor from SOURCE, a Flavor class
    given as `package.module.ClassName`, importable from the working directory or installed.

    \b
    Example:
      conveyor {kind.cli} flavor register my_pkg.flavors.MyFlavor
      conveyor {kind.cli} register my_{kind.value} --flavor=my_flavor
    """)
    @click.argument("source")
    def flavor_register(source: str) -> None:
        ctx = get_ctx()
        flavor = ctx.registry.register_custom(source, _ctype(kind))
        say(f"Registered {kind.label} flavor {flavor.name!r} from {source}.", style="green")
        say(f"Use it: `conveyor {kind.cli} register NAME --flavor={flavor.name}` "
            f"(fields: {', '.join(flavor.config_class.model_fields) or 'none'}).")

    return group


def _ctype(kind: Kind) -> Any:
    from conveyor.stack.component import ComponentType

    return ComponentType(kind.value)


def component_groups() -> list[click.Group]:
    return [make_group(kind) for kind in (KINDS[2], KINDS[0], KINDS[1])]
