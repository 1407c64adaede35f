"""`conveyor step-operator|orchestrator|artifact-store ...`: one group per component type, built by one factory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from conveyor.cli._common import (
    component_record,
    CONTAINER_REGISTRY,
    KINDS,
    SECRET_MASK,
    STEP_OPERATOR,
    Kind,
    config_for_display,
    config_summary,
    config_values,
    emit,
    fail,
    get_ctx,
    note,
    output_option,
    parse_field_args,
    say,
    show,
    stacks_using,
    table,
)
from conveyor.config.names import check_name

if TYPE_CHECKING:
    from conveyor.stack.flavor_description import FlavorDescription

_EXAMPLES = {
    "step_operator": ("gpu", "local", "--pending_timeout=10m --memory_enforcement=rlimit", "--pending_timeout=1h"),
    "orchestrator": ("fast", "local", "--max_parallelism=4", "--max_parallelism=8"),
    "artifact_store": ("shared", "local", "--path=/mnt/shared/artifacts", "--path=/mnt/other"),
    "container_registry": ("images", "default", "--uri=registry.example.com:5000/ml", "--insecure=true"),
}

#: a component and a field with a default, for `remove-attribute --help`
_RESET_EXAMPLES = {"step_operator": "gpu pending_timeout", "orchestrator": "fast max_parallelism",
                   "artifact_store": "s3_store region", "container_registry": "images password"}

_EXTRA_ARGS = {"ignore_unknown_options": True, "allow_extra_args": True}


def _name_and_fields(kind: Kind, args: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    positionals, fields = parse_field_args(args)
    if not positionals:
        fail(f"missing the {kind.label}'s NAME: `conveyor {kind.cli} register NAME --flavor=FLAVOR --field=value`")
    if len(positionals) > 1:
        fail(f"unexpected argument(s) {' '.join(positionals[1:])!r}: give one NAME, and config fields as --field=value")
    return positionals[0], fields


def _warn_plain_secrets(name: str, fields: tuple[str, ...]) -> None:
    """A secret field given as a plain value is stored as given: say so, and how to keep it in a secret."""
    for field in fields:
        note(f"warning: {field} is kept in plain text in the metadata store. Keep it in a secret instead: "
             f"`conveyor secret create {name} {field}=...`, then --{field}={{{{{name}.{field}}}}}")


def _plural(noun: str) -> str:
    """"container registry" -> "container registries", "step operator" -> "step operators"."""
    return noun[:-1] + "ies" if noun.endswith("y") else noun + "s"


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def make_group(kind: Kind) -> click.Group:
    """The register/list/describe/update/delete/flavor commands for one component type."""
    ex_name, ex_flavor, ex_fields, ex_update = _EXAMPLES[kind.value]

    @click.group(kind.cli, help=f"""Register and manage {_plural(kind.label)}.

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
        from conveyor.client import Client

        name, fields = _name_and_fields(kind, args)
        ctx = get_ctx()
        saved = Client(ctx).register_component(kind.value, name, flavor, **fields)
        say(f"Registered {kind.label} {name!r} (flavor {flavor!r}).", style="green")
        _warn_plain_secrets(name, saved.plain_secrets)
        if kind is STEP_OPERATOR:
            say(f"Add it to a stack with `conveyor stack update {ctx.active_stack_name} -s {name}`, then use it with "
                f"@step(step_operator={name!r}).")
        elif kind is CONTAINER_REGISTRY:
            say(f"Add it to a stack with `conveyor stack update {ctx.active_stack_name} -c {name}`: container steps' "
                "images are then pushed there before each run.")

    @group.command("list", help=f"""List registered {_plural(kind.label)}, their flavor, configuration and stacks.

    \b
    Examples:
      conveyor {kind.cli} list
      conveyor {kind.cli} list --output json
    """)
    @output_option
    def list_(output: str) -> None:
        ctx = get_ctx()
        records = ctx.store.list_components(kind.value)
        stacks = {r["id"]: stacks_using(ctx, r["id"]) for r in records}

        def render() -> None:
            if not records:
                say(f"No {_plural(kind.label)}. Register one with `conveyor {kind.cli} register NAME --flavor=FLAVOR`.")
                return
            t = table("name", "flavor", "configuration", "stacks")
            for r in records:
                t.add_row(r["name"], r["flavor"], config_summary(ctx, kind, r), ", ".join(stacks[r["id"]]) or "-")
            show(t)

        emit([{"id": r["id"], "name": r["name"], "type": kind.value, "flavor": r["flavor"],
               "configuration": config_values(ctx, kind, r), "stacks": stacks[r["id"]], "created": r["created"],
               "updated": r["updated"]} for r in records], render)

    @group.command("describe", help=f"""Show {kind.label} NAME: flavor, every config field, and the stacks using it.

    \b
    Examples:
      conveyor {kind.cli} describe {ex_name}
      conveyor {kind.cli} describe {ex_name} --output json
    """)
    @click.argument("name")
    @output_option
    def describe(name: str, output: str) -> None:
        from conveyor.stack.flavor_description import describe_fields

        ctx = get_ctx()
        r = component_record(ctx, kind, name)
        flavor = ctx.registry.get(kind.value, r["flavor"])
        origin = ctx.registry.sources(_ctype(kind)).get(r["flavor"], ("", "?"))[1]
        stacks = stacks_using(ctx, r["id"])
        configuration = config_values(ctx, kind, r)

        def render() -> None:
            say(f"{kind.label.capitalize()} {name!r}", style="bold")
            say(f"flavor: {r['flavor']} ({origin}){' - ' + flavor.description if flavor.description else ''}")
            say(f"stacks: {', '.join(stacks) or '(none)'}")
            t = table("field", "value", "", "description")
            fields = flavor.config_class.model_fields
            for field, value, is_default in config_for_display(flavor.config_class, r["config"] or {}):
                t.add_row(field, value, "(default)" if is_default else "", fields[field].description or "")
            show(t)

        emit({"id": r["id"], "name": r["name"], "type": kind.value, "flavor": r["flavor"], "flavor_origin": origin,
              "flavor_description": flavor.description, "stacks": stacks, "configuration": configuration,
              "fields": [{"name": f.name, "type": f.type, "value": configuration.get(f.name, f.default),
                          "is_default": f.name not in configuration, "required": f.required,
                          "description": f.description} for f in describe_fields(flavor.config_class)],
              "created": r["created"], "updated": r["updated"]}, render)

    @group.command("update", context_settings=_EXTRA_ARGS, help=f"""Change config fields of {kind.label} NAME.

    The new fields are merged into the existing config, and the result is validated before it is saved.

    \b
    Example:
      conveyor {kind.cli} update {ex_name} {ex_update}
    """)
    @click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="NAME --FIELD=VALUE...")
    def update(args: tuple[str, ...]) -> None:
        from conveyor.client import Client

        name, fields = _name_and_fields(kind, args)
        saved = Client(get_ctx()).update_component(kind.value, name, **fields)
        shown = ", ".join(f"{k}={SECRET_MASK if k in saved.plain_secrets else v}" for k, v in fields.items())
        say(f"Updated {kind.label} {name!r}: {shown}.", style="green")
        _warn_plain_secrets(name, saved.plain_secrets)

    @group.command("delete", help=f"""Delete {kind.label} NAME; refused while a stack uses it.

    \b
    Example:
      conveyor {kind.cli} delete {ex_name}
    """)
    @click.argument("name")
    def delete(name: str) -> None:
        from conveyor.client import Client

        Client(get_ctx()).delete_component(kind.value, name)
        say(f"Deleted {kind.label} {name!r}.", style="green")

    @group.command("rename", help=f"""Rename {kind.label} NAME to NEW_NAME.

    It keeps its id, flavor and config, and the stacks that hold it keep it under the new name.

    \b
    Example:
      conveyor {kind.cli} rename {ex_name} {ex_name}_old
    """)
    @click.argument("name")
    @click.argument("new_name")
    def rename(name: str, new_name: str) -> None:
        from conveyor.stack.lifecycle import rename_component

        check_name(kind.label, new_name)
        ctx = get_ctx()
        component_record(ctx, kind, name)
        done = rename_component(ctx.store, kind.value, name, new_name)
        kept = f"; stack(s) {', '.join(done.stacks)} keep it" if done.stacks else ""
        say(f"Renamed {kind.label} {name!r} to {new_name!r}{kept}.", style="green")
        if done.code_note:
            note(f"Note: {done.code_note}.")

    @group.command("copy", help=f"""Register TARGET, {_a(kind.label)} with the flavor and config of SOURCE.

    The copy is a component of its own (a new id; changing one leaves the other alone) and is in no stack.

    \b
    Example:
      conveyor {kind.cli} copy {ex_name} {ex_name}_2
      conveyor {kind.cli} update {ex_name}_2 {ex_update}
    """)
    @click.argument("source")
    @click.argument("target")
    def copy(source: str, target: str) -> None:
        from conveyor.stack.lifecycle import copy_component

        check_name(kind.label, target)
        ctx = get_ctx()
        component_record(ctx, kind, source)
        done = copy_component(ctx.store, kind.value, source, target)
        say(f"Copied {kind.label} {source!r} to {target!r} (flavor {done.flavor!r}).", style="green")
        if kind is STEP_OPERATOR:
            say(f"Add it to a stack with `conveyor stack update {ctx.active_stack_name} -s {target}`.")

    @group.command("remove-attribute", help=f"""Reset config fields ATTR of {kind.label} NAME to their defaults.

    A field without a default cannot be reset (change it with `update`); the config that results is
    validated before it is saved.

    \b
    Example:
      conveyor {kind.cli} remove-attribute {_RESET_EXAMPLES[kind.value]}
    """)
    @click.argument("name")
    @click.argument("attributes", nargs=-1, required=True, metavar="ATTR...")
    def remove_attribute(name: str, attributes: tuple[str, ...]) -> None:
        from conveyor.stack.lifecycle import remove_attributes

        ctx = get_ctx()
        component_record(ctx, kind, name)
        done = remove_attributes(ctx.store, ctx.registry, kind.value, name, [a.removeprefix("--") for a in attributes])
        if done.reset:
            say(f"Reset {', '.join(done.reset)} of {kind.label} {name!r} to the default.", style="green")
        if done.already_default:
            say(f"{', '.join(done.already_default)} of {kind.label} {name!r} already at the default.")

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
    Examples:
      conveyor {kind.cli} flavor list
      conveyor {kind.cli} flavor list --output json
    """)
    @output_option
    def flavor_list(output: str) -> None:
        from conveyor.exceptions import ConveyorError

        ctx = get_ctx()
        rows = []
        for fname, (source, origin) in sorted(ctx.registry.sources(_ctype(kind)).items()):
            try:
                description, error = ctx.registry.get(kind.value, fname).description, None
            except ConveyorError as err:
                description, error = "", str(err)
            rows.append({"name": fname, "type": kind.value, "origin": origin, "description": description,
                         "source": source, "error": error})

        def render() -> None:
            t = table("flavor", "origin", "description", "source")
            for row in rows:
                description = f"(unavailable: {row['error']})" if row["error"] else row["description"]
                t.add_row(row["name"], row["origin"], description, row["source"])
            show(t)

        emit(rows, render)

    @flavor_group.command("describe", help=f"""Show what {kind.label} flavor FLAVOR accepts: every config field
    with its type, default and description, the extra it needs and whether it is installed, and its per-step
    settings if it has any.

    \b
    Examples:
      conveyor {kind.cli} flavor describe {ex_flavor}
      conveyor {kind.cli} flavor describe {ex_flavor} --output json
    """)
    @click.argument("flavor")
    @output_option
    def flavor_describe(flavor: str, output: str) -> None:
        from conveyor.stack.flavor_description import describe_flavor

        ctx = get_ctx()
        info = describe_flavor(ctx.registry, kind.value, flavor)
        emit(info, lambda: _render_flavor(kind, info))

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


def _field_table(fields: Any) -> Any:
    t = table("field", "type", "default", "description")
    for f in fields:
        default = "(required)" if f.required else _shown_default(f.default, f.secret)
        t.add_row(f.name, f.type, default, f.description)
    return t


def _shown_default(value: Any, secret: bool) -> str:
    import json

    if secret and value is not None:
        return SECRET_MASK
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value)


def _render_flavor(kind: Kind, info: "FlavorDescription") -> None:
    say(f"{kind.label.capitalize()} flavor {info.name!r} ({info.origin})"
        + (f" - {info.description}" if info.description else ""), style="bold")
    say(f"source: {info.source}")
    if info.integration is None:
        say("integration: none needed (works with the base install)")
    elif info.integration.installed:
        say(f"integration: {info.integration.name} (extra {info.integration.extra!r}): installed")
    else:
        say(f"integration: {info.integration.name} (extra {info.integration.extra!r}): NOT installed; install it with "
            f"`{info.integration.install_command}`")
    say(f"\nConfig fields ({info.config_class}), set with "
        f"`conveyor {kind.cli} register NAME --flavor={info.name} --FIELD=VALUE`:")
    show(_field_table(info.fields))
    if info.settings is not None:
        say(f"\nSettings per step ({info.settings.import_path}), under the key {info.settings.key!r}: "
            f"@step(settings={{{info.settings.key!r}: {info.settings.class_name}(...)}})")
        show(_field_table(info.settings.fields))


def _ctype(kind: Kind) -> Any:
    from conveyor.stack.component import ComponentType

    return ComponentType(kind.value)


def component_groups() -> list[click.Group]:
    return [make_group(kind) for kind in (KINDS[2], KINDS[0], KINDS[1], KINDS[3])]
