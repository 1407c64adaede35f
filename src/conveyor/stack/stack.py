"""A stack: one orchestrator, one artifact store, any number of step operators (the first is the default), and at
most one container registry (where container steps' images are pushed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor.exceptions import StackError
from conveyor.stack.component import ComponentType, PlainConfig, StackComponent

if TYPE_CHECKING:
    from conveyor.artifact_stores.base import BaseArtifactStore
    from conveyor.container_registries.base import BaseContainerRegistry
    from conveyor.orchestrators.base import BaseOrchestrator
    from conveyor.secrets.vault import Vault
    from conveyor.stack.registry import FlavorRegistry
    from conveyor.step_operators.base import BaseStepOperator


def build_component(registry: "FlavorRegistry", record: dict[str, Any], vault: "Vault | None" = None) -> StackComponent:
    """The component, with its config's secret references resolved from `vault`: this happens only when it is
    used. The config is validated here (pydantic) unless its flavor vouches for it as stored (`plain_config`):
    then the model is built only if something reads `.config`."""
    flavor = registry.get(record["type"], record["flavor"])
    raw = record["config"]
    if "{{" in repr(raw):
        from conveyor.secrets.references import has_references
        from conveyor.secrets.runtime import resolve

        if vault is None and has_references(raw):
            raise StackError(f"{record['type']} {record['name']!r} has secret references in its config: build it "
                             "with the project's secrets (`Context.load_stack()` or `build_component(..., vault=)`)")
        raw = resolve(raw, vault) if vault is not None else raw
    where = f"{record['type']} {record['name']!r}"
    values = flavor.plain_config(raw) if isinstance(raw, dict) else None
    if values is not None:
        config: Any = PlainConfig(values, raw, flavor, where)
    else:
        from conveyor.config.base import validate_strict

        config = validate_strict(flavor.config_class, raw, where)
    return flavor.implementation_class(name=record["name"], config=config, flavor=record["flavor"], id=record["id"])


class Stack:
    def __init__(self, name: str, records: list[dict[str, Any]], registry: "FlavorRegistry",
                 vault: "Vault | None" = None) -> None:
        self.name = name
        self._registry = registry
        self._vault = vault
        self._records = records
        self._built: dict[str, StackComponent] = {}
        by_type: dict[str, list[dict[str, Any]]] = {}
        for r in records:
            by_type.setdefault(r["type"], []).append(r)
        for required in (ComponentType.ORCHESTRATOR, ComponentType.ARTIFACT_STORE):
            if len(by_type.get(required.value, [])) != 1:
                raise StackError(f"stack {name!r} must have exactly one {required.cli_name}")
        self._orchestrator = by_type[ComponentType.ORCHESTRATOR.value][0]
        self._artifact_store = by_type[ComponentType.ARTIFACT_STORE.value][0]
        self._operators = {r["name"]: r for r in by_type.get(ComponentType.STEP_OPERATOR.value, [])}
        registries = by_type.get(ComponentType.CONTAINER_REGISTRY.value, [])
        if len(registries) > 1:
            raise StackError(f"stack {name!r} has {len(registries)} container registries: keep one with "
                             f"`conveyor stack update {name} -c NAME`")
        self._registry_record = registries[0] if registries else None

    def _component(self, record: dict[str, Any]) -> StackComponent:
        if record["id"] not in self._built:
            self._built[record["id"]] = build_component(self._registry, record, self._vault)
        return self._built[record["id"]]

    @property
    def orchestrator(self) -> "BaseOrchestrator":
        return self._component(self._orchestrator)  # type: ignore[return-value]

    @property
    def artifact_store(self) -> "BaseArtifactStore":
        return self._component(self._artifact_store)  # type: ignore[return-value]

    @property
    def container_registry(self) -> "BaseContainerRegistry | None":
        """Where container steps' images are pushed; None when the stack has none."""
        if self._registry_record is None:
            return None
        return self._component(self._registry_record)  # type: ignore[return-value]

    @property
    def step_operator_names(self) -> list[str]:
        return list(self._operators)

    def step_operator_flavor(self, name: str) -> str:
        return self._lookup(name)["flavor"]

    def _lookup(self, name: str) -> dict[str, Any]:
        if name not in self._operators:
            registered = ", ".join(self._operators) or "(none)"
            raise StackError(
                f"unknown step operator {name!r}: stack {self.name!r} has {registered}. "
                f"Register one with `conveyor step-operator register {name} --flavor=local` and add it with "
                f"`conveyor stack update {self.name} -s {name}`.")
        return self._operators[name]

    def resolve_operator_name(self, requested: str | bool | None) -> str | None:
        if requested is None or requested is False:
            return None
        if requested is True:
            if not self._operators:
                raise StackError(f"step asks for the default step operator but stack {self.name!r} has none: "
                                 f"`conveyor stack update {self.name} -s NAME`")
            return next(iter(self._operators))
        self._lookup(requested)
        return requested

    def step_operator(self, name: str) -> "BaseStepOperator":
        """The operator, told where the stack's container registry is when it runs steps in images
        (`use_registry`): built (its secret references resolved) only when an image is pushed."""
        operator = self._component(self._lookup(name))
        use_registry = getattr(operator, "use_registry", None)
        if use_registry is not None:
            use_registry(lambda: self.container_registry, self.name)
        return operator  # type: ignore[return-value]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "orchestrator": self._orchestrator["name"],
            "artifact_store": self._artifact_store["name"],
            "step_operators": list(self._operators),
            "container_registry": self._registry_record["name"] if self._registry_record else None,
        }
