"""Registering, updating, deleting, renaming, copying and resetting fields of components: what `conveyor <type>
register | update | delete | rename | copy | remove-attribute` do, here so that the CLI and the Client only format
and a script can do the same."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.exceptions import ConfigError, StackError
from conveyor.stack.component import ComponentType

if TYPE_CHECKING:
    from conveyor.stack.registry import FlavorRegistry
    from conveyor.store.store import MetadataStore

__all__ = ["ComponentCopy", "ComponentRename", "ComponentSaved", "FieldsReset", "copy_component", "delete_component",
           "get_component", "register_component", "remove_attributes", "rename_component", "stacks_using",
           "update_component"]


def _label(type_: ComponentType) -> str:
    return type_.value.replace("_", " ")


@dataclass(frozen=True)
class ComponentRename:
    """A component renamed in place: same id, so the stacks that hold it keep it."""

    type: ComponentType
    id: str
    old_name: str
    new_name: str
    stacks: tuple[str, ...]

    @property
    def code_note(self) -> str | None:
        """What else names it: steps pick a step operator by name, in code and in run configs."""
        if self.type is not ComponentType.STEP_OPERATOR or self.old_name == self.new_name:
            return None
        return (f"steps that name the step operator {self.old_name!r} (`@step(step_operator={self.old_name!r})`, "
                f"`.with_options(step_operator={self.old_name!r})`, `step_operator: {self.old_name}` in a run config) "
                f"must now name {self.new_name!r}; runs recorded before keep the old name")


@dataclass(frozen=True)
class ComponentCopy:
    """A new component with the source's flavor and config, in no stack yet."""

    type: ComponentType
    id: str
    source: str
    name: str
    flavor: str


@dataclass(frozen=True)
class FieldsReset:
    """Config fields put back to their defaults (removed from the stored config)."""

    type: ComponentType
    name: str
    reset: tuple[str, ...]
    already_default: tuple[str, ...]
    config: dict[str, Any]


@dataclass(frozen=True)
class ComponentSaved:
    """A component registered or updated: its config as stored (normalised; secrets as given)."""

    type: ComponentType
    id: str
    name: str
    flavor: str
    config: dict[str, Any]
    #: secret fields (SecretStr) given as a plain value, not a {{name.key}} reference: stored as given
    plain_secrets: tuple[str, ...] = ()


def get_component(store: "MetadataStore", type_: ComponentType | str, name: str) -> dict[str, Any]:
    """The stored component, or an error listing the registered ones and how to register this one."""
    ctype = ComponentType(type_)
    record = store.get_component(ctype.value, name)
    if record is None:
        label, cli = _label(ctype), ctype.cli_name
        known = ", ".join(c["name"] for c in store.list_components(ctype.value)) or "(none)"
        raise StackError(f"no {label} named {name!r}. Registered {label}s: {known} (see `conveyor {cli} list`); "
                         f"register one with `conveyor {cli} register {name} --flavor=FLAVOR`")
    return record


def register_component(store: "MetadataStore", registry: "FlavorRegistry", type_: ComponentType | str, name: str,
                       flavor: str, config: Mapping[str, Any]) -> ComponentSaved:
    """Register component `name` of `flavor`; its config is validated (and the flavor's integration checked)
    before anything is saved."""
    from conveyor.config.names import check_name
    from conveyor.integrations import require_flavor_integration
    from conveyor.stack.component_config import config_to_store, plain_secret_fields, validate_config

    ctype = ComponentType(type_)
    label = _label(ctype)
    check_name(label, name)
    if store.get_component(ctype.value, name) is not None:
        raise StackError(f"a {label} named {name!r} already exists: pick another name, or change it with "
                         f"`conveyor {ctype.cli_name} update {name} --field=value`")
    flavor_obj = registry.get(ctype.value, flavor)
    require_flavor_integration(ctype.value, flavor)  # not installed: the exact pip command, before saving
    fields = dict(config)
    model = validate_config(flavor_obj.config_class, fields, f"{label} {name!r} (flavor {flavor!r})")
    stored = config_to_store(model, fields)
    cid = store.create_component(ctype.value, name, flavor, stored)
    return ComponentSaved(ctype, cid, name, flavor, stored, plain_secret_fields(model, fields))


#: values a user gives `update` meaning "no value" (a field is reset with `remove-attribute` instead)
_UNSET = frozenset({"", "null", "none", "default", "unset"})


def update_component(store: "MetadataStore", registry: "FlavorRegistry", type_: ComponentType | str, name: str,
                     changes: Mapping[str, Any]) -> ComponentSaved:
    """Merge `changes` into the config of component `name`; the result is validated before it is saved."""
    from conveyor.integrations import require_flavor_integration
    from conveyor.stack.component_config import config_to_store, plain_secret_fields, validate_config

    ctype = ComponentType(type_)
    label, cli = _label(ctype), ctype.cli_name
    if "flavor" in changes:
        raise ConfigError(f"the flavor of a {label} cannot change: `conveyor {cli} delete {name}` and register it again")
    if not changes:
        raise ConfigError(f"nothing to change: give config fields, e.g. `conveyor {cli} update {name} --field=value`")
    record = get_component(store, ctype, name)
    flavor = registry.get(ctype.value, record["flavor"])
    require_flavor_integration(ctype.value, record["flavor"])
    merged = {**(record["config"] or {}), **changes}
    try:
        model = validate_config(flavor.config_class, merged, f"{label} {name!r} (flavor {record['flavor']!r})")
    except ConfigError as err:
        unset = [k for k, v in changes.items() if k in err.fields  # the fields refused, not others
                 and (v is None or (isinstance(v, str) and v.strip().lower() in _UNSET))]
        if not unset:
            raise
        raise ConfigError(f"{err}. To put a field back to its default, reset it: "
                          f"`conveyor {cli} remove-attribute {name} {' '.join(unset)}`") from None
    stored = config_to_store(model, merged)
    store.update_component(ctype.value, name, stored)
    return ComponentSaved(ctype, record["id"], name, record["flavor"], stored, plain_secret_fields(model, changes))


def delete_component(store: "MetadataStore", type_: ComponentType | str, name: str) -> None:
    """Delete component `name`; refused, naming the command that frees it, while a stack holds it."""
    ctype = ComponentType(type_)
    label = _label(ctype)
    record = get_component(store, ctype, name)
    used = stacks_using(store, record["id"])
    if used:
        how = (f"`conveyor stack update {used[0]} --remove-step-operator {name}`"
               if ctype is ComponentType.STEP_OPERATOR
               else f"`conveyor stack update {used[0]} --remove-container-registry`"
               if ctype is ComponentType.CONTAINER_REGISTRY
               else f"`conveyor stack update {used[0]} -{'o' if ctype is ComponentType.ORCHESTRATOR else 'a'} OTHER`")
        raise StackError(f"{label} {name!r} is used by stack(s) {', '.join(used)}: remove it from them first ({how}) "
                         "or delete those stacks (`conveyor stack delete NAME`)")
    store.delete_component(ctype.value, name)


def stacks_using(store: "MetadataStore", component_id: str) -> list[str]:
    """Names of the stacks that hold the component, sorted."""
    out = []
    for stack_name in store.list_stacks():
        record = store.get_stack(stack_name)
        if record and any(c["id"] == component_id for c in record["components"]):
            out.append(stack_name)
    return out


def rename_component(store: "MetadataStore", type_: ComponentType | str, old: str, new: str) -> ComponentRename:
    """Rename `old` to `new` (a valid, free name); its id, config and stacks stay."""
    ctype = ComponentType(type_)
    cid = store.rename_component(ctype.value, old, new)
    return ComponentRename(ctype, cid, old, new, tuple(stacks_using(store, cid)))


def copy_component(store: "MetadataStore", type_: ComponentType | str, source: str, target: str) -> ComponentCopy:
    """Register `target` with the flavor and config of `source` (a new id; added to no stack)."""
    ctype = ComponentType(type_)
    cid = store.copy_component(ctype.value, source, target)
    record = store.get_component_by_id(cid)
    assert record is not None
    return ComponentCopy(ctype, cid, source, target, record["flavor"])


def remove_attributes(store: "MetadataStore", registry: "FlavorRegistry", type_: ComponentType | str, name: str,
                      attributes: Sequence[str]) -> FieldsReset:
    """Reset config fields of component `name` to their defaults; the result is validated before it is saved.

    A field without a default cannot be reset, and a name that is not a field of the flavor's config is refused
    with the valid ones: nothing is written in either case."""
    from conveyor.config.base import validate_strict

    ctype = ComponentType(type_)
    label, cli = _label(ctype), ctype.cli_name
    if not attributes:
        raise ConfigError(f"no field to reset: `conveyor {cli} remove-attribute {name} FIELD [FIELD...]`")
    record = store.get_component(ctype.value, name)
    if record is None:
        raise StackError(f"no {label} named {name!r}: see `conveyor {cli} list`")
    config_class = registry.get(ctype, record["flavor"]).config_class
    fields = config_class.model_fields
    where = f"{label} {name!r} (flavor {record['flavor']!r})"
    wanted = list(dict.fromkeys(attributes))
    unknown = [a for a in wanted if a not in fields]
    if unknown:
        from conveyor.stack.component_config import field_hints

        raise ConfigError(f"{where} has no field {field_hints(unknown, list(fields))}. Fields of {config_class.__name__}: "
                          f"{', '.join(fields) or '(none)'}")
    required = [a for a in wanted if fields[a].is_required()]
    if required:
        example = " ".join(f"--{a}=VALUE" for a in required)
        raise ConfigError(f"cannot reset {', '.join(repr(a) for a in required)} of {where}: required, with no default "
                          f"to go back to. Change the value instead: `conveyor {cli} update {name} {example}`")
    config = dict(record["config"] or {})
    reset = tuple(a for a in wanted if a in config)
    remaining = {k: v for k, v in config.items() if k not in wanted}
    validate_strict(config_class, remaining, where)
    if reset:
        store.update_component(ctype.value, name, remaining)
    return FieldsReset(ctype, name, reset, tuple(a for a in wanted if a not in config), remaining)
