"""Where flavors come from: built-ins, the `conveyor.flavors` entry-point group, and sources registered by CLI."""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

from conveyor.exceptions import StackError
from conveyor.stack.component import ComponentType
from conveyor.stack.flavor import Flavor

if TYPE_CHECKING:
    from conveyor.store.store import MetadataStore

ENTRY_POINT_GROUP = "conveyor.flavors"

BUILTIN_FLAVORS: dict[ComponentType, dict[str, str]] = {
    ComponentType.ORCHESTRATOR: {"local": "conveyor.orchestrators.local.flavor:LocalOrchestratorFlavor"},
    ComponentType.ARTIFACT_STORE: {
        "local": "conveyor.artifact_stores.local.flavor:LocalArtifactStoreFlavor",
        "s3": "conveyor.artifact_stores.s3.flavor:S3ArtifactStoreFlavor",
        "gcs": "conveyor.artifact_stores.gcs.flavor:GCSArtifactStoreFlavor",
        "azure": "conveyor.artifact_stores.azure.flavor:AzureArtifactStoreFlavor",
    },
    ComponentType.STEP_OPERATOR: {
        "local": "conveyor.step_operators.local.flavor:LocalStepOperatorFlavor",
        "fault": "conveyor.step_operators.fault.flavor:FaultStepOperatorFlavor",
        "slurm": "conveyor.step_operators.slurm.flavor:SlurmStepOperatorFlavor",
        "ssh": "conveyor.step_operators.ssh.flavor:SSHStepOperatorFlavor",
        "ray": "conveyor.step_operators.ray.flavor:RayStepOperatorFlavor",
        "spark": "conveyor.step_operators.spark.flavor:SparkStepOperatorFlavor",
        "kubernetes": "conveyor.step_operators.kubernetes.flavor:KubernetesStepOperatorFlavor",
        "docker": "conveyor.step_operators.docker.flavor:DockerStepOperatorFlavor",
        "vertex": "conveyor.step_operators.vertex.flavor:VertexStepOperatorFlavor",
        "azureml": "conveyor.step_operators.azureml.flavor:AzureMLStepOperatorFlavor",
        "modal": "conveyor.step_operators.modal.flavor:ModalStepOperatorFlavor",
        "sagemaker": "conveyor.step_operators.sagemaker.flavor:SageMakerStepOperatorFlavor",
    },
    ComponentType.CONTAINER_REGISTRY: {
        "default": "conveyor.container_registries.default.flavor:DefaultContainerRegistryFlavor",
        "aws": "conveyor.container_registries.aws.flavor:AWSContainerRegistryFlavor",
        "gcp": "conveyor.container_registries.gcp.flavor:GCPContainerRegistryFlavor",
        "azure": "conveyor.container_registries.azure.flavor:AzureContainerRegistryFlavor",
    },
}


def load_source(source: str) -> Any:
    """Import "pkg.mod.Attr" or "pkg.mod:Attr", with the working directory importable as in a script."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    if ":" in source:
        module_name, _, attr = source.partition(":")
    else:
        module_name, _, attr = source.rpartition(".")
    if not module_name or not attr:
        raise StackError(f"invalid source {source!r}: write it as 'package.module.ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise StackError(f"cannot import module {module_name!r} of source {source!r}: {err}. "
                         "Run the command from the directory that contains the package, or install it.") from err
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj
    except AttributeError:
        raise StackError(f"module {module_name!r} has no attribute {attr!r} (source {source!r})") from None


def instantiate_flavor(source: str) -> Flavor:
    cls = load_source(source)
    if not (isinstance(cls, type) and issubclass(cls, Flavor)):
        raise StackError(f"{source!r} is not a Flavor subclass: point at a class deriving from "
                         "conveyor.step_operators.BaseStepOperatorFlavor (or another *Flavor base)")
    try:
        return cls()
    except TypeError as err:
        raise StackError(f"flavor {source!r} cannot be instantiated: {err}. Implement every abstract property "
                         "(name, type, config_class, implementation_class).") from err


class FlavorRegistry:
    def __init__(self, store: "MetadataStore | None" = None) -> None:
        self.store = store
        self._cache: dict[tuple[ComponentType, str], Flavor] = {}
        self._entry_points: dict[tuple[ComponentType, str], str] | None = None

    def _entry_point_sources(self) -> dict[tuple[ComponentType, str], str]:
        if self._entry_points is None:
            from importlib.metadata import entry_points

            found: dict[tuple[ComponentType, str], str] = {}
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                try:
                    flavor = instantiate_flavor(ep.value)
                except StackError:
                    continue
                ftype = ComponentType(flavor.type)
                if flavor.name in BUILTIN_FLAVORS[ftype]:
                    continue  # a package cannot replace a built-in flavor
                found[(ftype, flavor.name)] = ep.value
            self._entry_points = found
        return self._entry_points

    def sources(self, type_: ComponentType) -> dict[str, tuple[str, str]]:
        """name -> (source, origin) for every known flavor of this type."""
        out = {name: (src, "builtin") for name, src in BUILTIN_FLAVORS[type_].items()}
        for (ftype, name), src in self._entry_point_sources().items():
            if ftype == type_:
                out.setdefault(name, (src, "entry point"))
        if self.store is not None:
            for row in self.store.custom_flavors(type_.value):
                out[row["name"]] = (row["source"], "custom")
        return out

    def get(self, type_: ComponentType | str, name: str) -> Flavor:
        type_ = ComponentType(type_)
        key = (type_, name)
        if key in self._cache:
            return self._cache[key]
        source = BUILTIN_FLAVORS[type_].get(name)
        if source is None and self.store is not None:
            for row in self.store.custom_flavors(type_.value):
                if row["name"] == name:
                    source = row["source"]
        if source is None:
            source = self._entry_point_sources().get(key)
        if source is None:
            known = ", ".join(sorted(self.sources(type_))) or "(none)"
            raise StackError(f"unknown {type_.cli_name} flavor {name!r}. Known flavors: {known}. "
                             f"Register a custom one with `conveyor {type_.cli_name} flavor register my_pkg.flavors.MyFlavor`.")
        flavor = instantiate_flavor(source)
        self._cache[key] = flavor
        return flavor

    def register_custom(self, source: str, expected_type: ComponentType) -> Flavor:
        flavor = instantiate_flavor(source)
        ftype = ComponentType(flavor.type)
        if ftype != expected_type:
            article = "an" if expected_type.cli_name[0] in "aeiou" else "a"
            raise StackError(f"{source!r} is a {ftype.cli_name} flavor, not {article} {expected_type.cli_name} flavor: "
                             f"register it with `conveyor {ftype.cli_name} flavor register {source}`")
        if not flavor.name or not isinstance(flavor.name, str):
            raise StackError(f"flavor {source!r} has no name: give it a `name` property")
        if flavor.name in BUILTIN_FLAVORS[ftype]:
            raise StackError(f"flavor name {flavor.name!r} is taken by a built-in {ftype.cli_name} flavor: rename yours")
        _ = flavor.config_class  # must be importable now, validated at registration
        assert self.store is not None
        self.store.register_flavor(ftype.value, flavor.name, f"{type(flavor).__module__}.{type(flavor).__qualname__}")
        self._cache[(ftype, flavor.name)] = flavor
        return flavor
