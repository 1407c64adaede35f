"""Integrations: which pip extra a flavor needs, whether it is installed, and installing it (`zenml integration`).

Light on purpose: nothing here imports an SDK. "Installed" means every module of the integration can be found
(`importlib.util.find_spec`), so asking costs no import of ray, boto3 or the like.
"""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass

from conveyor.exceptions import ConveyorError

__all__ = [
    "DISTRIBUTION",
    "InstallPlan",
    "Integration",
    "IntegrationNotInstalledError",
    "extra_requirements",
    "get_integration",
    "install_plan",
    "integration_for_flavor",
    "list_integrations",
    "require_flavor_integration",
    "run_install",
]

#: this package's distribution name, whose metadata lists each extra's requirements
DISTRIBUTION = "conveyor"


class IntegrationNotInstalledError(ConveyorError):
    """A flavor's Python packages are missing from this environment."""


@dataclass(frozen=True)
class Integration:
    """One pip extra of Conveyor and the flavors that need it."""

    name: str
    #: the `[project.optional-dependencies]` key in pyproject.toml
    extra: str
    #: modules whose presence means the extra is installed (found, not imported)
    modules: tuple[str, ...]
    #: (component type value, flavor name) pairs that need this integration
    flavors: tuple[tuple[str, str], ...] = ()
    #: False when a flavor can work without the packages (spark: a Spark installation given as `spark_home`), so
    #: registering it is not refused; its own pre-flight check says what is missing
    enforced: bool = True

    @property
    def installed(self) -> bool:
        return all(_findable(m) for m in self.modules)

    @property
    def install_command(self) -> str:
        return f"pip install '{DISTRIBUTION}[{self.extra}]'"

    @property
    def missing_modules(self) -> tuple[str, ...]:
        return tuple(m for m in self.modules if not _findable(m))


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing (or blocked)
        return False


SO = "step_operator"
AS = "artifact_store"

# from pyproject.toml [project.optional-dependencies]; test-aws, demo and dev are not integrations
_INTEGRATIONS: tuple[Integration, ...] = (
    Integration("aws", "aws", ("boto3", "s3fs"), ((SO, "sagemaker"),)),
    # as in ZenML, the S3 artifact store is its own integration: it needs s3fs, not boto3 (same extra)
    Integration("s3", "aws", ("s3fs",), ((AS, "s3"),)),
    Integration("gcp", "gcp", ("google.cloud.aiplatform", "google.cloud.logging"), ((SO, "vertex"),)),
    Integration("azure", "azure", ("azure.ai.ml", "azure.identity"), ((SO, "azureml"),)),
    # the GCS and Azure Blob artifact stores likewise: gcsfs / adlfs (each in its cloud's extra)
    Integration("gcs", "gcp", ("gcsfs",), ((AS, "gcs"),)),
    Integration("azure-blob", "azure", ("adlfs",), ((AS, "azure"),)),
    Integration("modal", "modal", ("modal",), ((SO, "modal"),)),
    Integration("kubernetes", "kubernetes", ("kubernetes",), ((SO, "kubernetes"),)),
    Integration("ray", "ray", ("ray",), ((SO, "ray"),)),
    Integration("spark", "spark", ("pyspark",), ((SO, "spark"),), enforced=False),
    Integration("ssh", "ssh", ("asyncssh",), ((SO, "ssh"),)),
    Integration("docker", "docker", ("docker",), ((SO, "docker"),)),
    Integration("slurm", "slurm", (), ((SO, "slurm"),)),
    Integration("postgres", "postgres", ("psycopg",)),
    Integration("numpy", "numpy", ("numpy",)),
    Integration("pandas", "pandas", ("pandas", "pyarrow")),
)


def list_integrations() -> list[Integration]:
    return list(_INTEGRATIONS)


def get_integration(name: str) -> Integration:
    """The integration called `name`; an unknown name is an error listing the known ones."""
    for integration in _INTEGRATIONS:
        if integration.name == name:
            return integration
    known = ", ".join(i.name for i in _INTEGRATIONS)
    raise ConveyorError(f"unknown integration {name!r}. Integrations: {known} (`conveyor integration list`).")


def integration_for_flavor(component_type: str, flavor: str) -> Integration | None:
    """The integration a built-in flavor needs; None for flavors that need nothing beyond Conveyor."""
    key = (str(getattr(component_type, "value", component_type)), flavor)
    return next((i for i in _INTEGRATIONS if key in i.flavors), None)


def require_flavor_integration(component_type: str, flavor: str) -> None:
    """Refuse a flavor whose integration is not installed, naming the command that installs it."""
    integration = integration_for_flavor(component_type, flavor)
    if integration is None or not integration.enforced or integration.installed:
        return
    label = str(getattr(component_type, "value", component_type)).replace("_", "-")
    missing = ", ".join(integration.missing_modules)
    raise IntegrationNotInstalledError(
        f"the {flavor!r} {label} flavor needs the {integration.name!r} integration, which is not installed here "
        f"(cannot find {missing}). Install it: {integration.install_command} "
        f"(or `conveyor integration install {integration.name}`).")


def extra_requirements(extra: str) -> list[str]:
    """The requirement strings of `extra`, read from this installed package's metadata (markers dropped)."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        declared = requires(DISTRIBUTION) or []
    except PackageNotFoundError:
        raise ConveyorError(f"cannot read the {DISTRIBUTION!r} package's metadata: is Conveyor installed "
                            "(pip install -e .)?") from None
    out = []
    for line in declared:
        requirement, _, marker = line.partition(";")
        if _marker_extra(marker) == extra:
            out.append(requirement.strip())
    return out


def _marker_extra(marker: str) -> str | None:
    """The extra named by a marker such as `extra == "ray"` (only that form: it is what setuptools writes)."""
    text = marker.strip()
    if not text.startswith("extra"):
        return None
    _, _, value = text.partition("==")
    return value.strip().strip("'\"") or None


@dataclass(frozen=True)
class InstallPlan:
    """What `conveyor integration install NAME` runs; `command` is empty when there is nothing to install."""

    integration: Integration
    requirements: tuple[str, ...]
    command: tuple[str, ...]

    @property
    def command_line(self) -> str:
        return shlex.join(self.command)


def install_plan(name: str) -> InstallPlan:
    """The pip command that installs integration `name`'s requirements into this interpreter's environment.

    The requirements come from this package's own metadata: never `pip install conveyor[x]` from PyPI, where
    "conveyor" is another project. `python -m pip` when this environment has pip, else `uv pip install --python`.
    """
    integration = get_integration(name)
    requirements = tuple(extra_requirements(integration.extra))
    if not requirements:
        return InstallPlan(integration, (), ())
    if _findable("pip"):
        command = (sys.executable, "-m", "pip", "install", *requirements)
    elif (uv := shutil.which("uv")) is not None:
        command = (uv, "pip", "install", "--python", sys.executable, *requirements)
    else:
        raise ConveyorError(
            f"this environment ({sys.executable}) has neither pip nor uv to install with. Install pip "
            f"(`{sys.executable} -m ensurepip`) or uv, then run `conveyor integration install {name}` again; "
            f"or install the requirements yourself: {shlex.join(requirements)}")
    return InstallPlan(integration, requirements, command)


def run_install(plan: InstallPlan) -> int:
    """Run the plan's command, its output going to this process's; its exit status."""
    if not plan.command:
        return 0
    return subprocess.run(list(plan.command), check=False).returncode
