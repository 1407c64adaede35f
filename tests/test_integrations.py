"""Integrations (issue 13 §1): a flavor whose packages are missing is refused at `register` and at pre-flight with
the exact pip command; `conveyor integration list | install`; every flavor's settings class from a light path.

"Not installed" is real: the CLI or the pipeline runs in a subprocess where `ray` cannot be imported (a
`sitecustomize.py` on PYTHONPATH puts a blocking finder first on `sys.meta_path`).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conveyor import Client

BLOCK_RAY = '''
import sys


class _NoRay:
    """This environment has no ray: importing it, or finding it, fails as for a package never installed."""

    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoRay())
'''

PIPELINE = '''
    from conveyor import pipeline, step


    @step(step_operator="ray_op")
    def train() -> int:
        return 1


    @pipeline(enable_cache=False)
    def ray_pipeline():
        train()


    if __name__ == "__main__":
        ray_pipeline()
'''

PIP_COMMAND = "pip install 'conveyor[ray]'"


@pytest.fixture
def without_ray(tmp_path: Path) -> dict[str, str]:
    """The environment of a subprocess in which `ray` is not installed."""
    site = tmp_path / "no_ray"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_RAY)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def test_register_refuses_a_flavor_whose_integration_is_missing(conveyor_cli, without_ray: dict[str, str]) -> None:
    refused = conveyor_cli("step-operator", "register", "ray_op", "--flavor=ray", check=False, env=without_ray)

    assert refused.returncode == 1, refused.stdout + refused.stderr
    message = " ".join(refused.stderr.split())
    assert PIP_COMMAND in message and "conveyor integration install ray" in message, refused.stderr
    assert "No module named" not in refused.stderr
    listed = conveyor_cli("step-operator", "list", "--output", "json").stdout
    assert "ray_op" not in listed  # nothing was saved
    # the same environment lists ray as not installed; this one (the suite's venv has ray) as installed
    blocked = json.loads(conveyor_cli("integration", "list", "--output", "json", env=without_ray).stdout)
    assert {i["name"]: i["installed"] for i in blocked}["ray"] is False
    here = json.loads(conveyor_cli("integration", "list", "--output", "json").stdout)
    assert {i["name"]: i["installed"] for i in here}["ray"] is True
    conveyor_cli("step-operator", "register", "ray_op", "--flavor=ray")  # installed: accepted
    update = conveyor_cli("step-operator", "update", "ray_op", "--address=http://head:8265", check=False,
                          env=without_ray)
    assert update.returncode == 1 and PIP_COMMAND in " ".join(update.stderr.split()), update.stderr


def test_preflight_refuses_a_run_whose_operator_integration_is_missing(project: Path,
                                                                        without_ray: dict[str, str]) -> None:
    from testkit import add_step_operator

    add_step_operator("ray_op", "ray")  # registered where ray is installed; the run happens where it is not
    (project / "ray_pipeline.py").write_text(textwrap.dedent(PIPELINE))

    done = subprocess.run([sys.executable, "ray_pipeline.py"], cwd=project, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CONVEYOR_QUIET": "1", **without_ray})

    assert done.returncode != 0
    assert PIP_COMMAND in " ".join(done.stderr.split()), done.stderr
    assert "No module named" not in done.stderr
    assert Client().list_pipeline_runs() == []  # refused before the run was recorded


def test_integration_list_shows_extras_flavors_and_installed(conveyor_cli) -> None:
    table = conveyor_cli("integration", "list").stdout
    assert [line.split()[:2] for line in table.splitlines() if line.startswith(("aws ", "ray ", "s3 "))] == [
        ["aws", "aws"], ["s3", "aws"], ["ray", "ray"]]
    rows = {i["name"]: i for i in json.loads(conveyor_cli("integration", "list", "--output", "json").stdout)}
    assert rows["aws"]["flavors"] == [{"component_type": "step_operator", "flavor": "sagemaker"}]
    assert rows["gcp"]["flavors"] == [{"component_type": "step_operator", "flavor": "vertex"}]
    assert rows["azure"]["install_command"] == "pip install 'conveyor[azure]'"
    assert rows["slurm"]["installed"] is True  # needs no Python package


def test_integration_install_runs_pip_on_this_environment(conveyor_cli) -> None:
    """ssh's requirement is already in the suite's venv: pip says so, with no index to reach."""
    env = {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = conveyor_cli("integration", "install", "ssh", "-y", env=env, timeout=180)

    ran = [line.removeprefix("Running: ") for line in done.stdout.splitlines() if line.startswith("Running: ")]
    assert len(ran) == 1, done.stdout
    python, *args = shlex.split(ran[0])
    assert args == ["-m", "pip", "install", "asyncssh>=2.14"]  # the extra's requirement, from our own metadata
    assert Path(python).parent == Path(sys.executable).parent  # this environment's interpreter: the venv's
    assert "Requirement already satisfied: asyncssh" in done.stdout
    assert "Installed the 'ssh' integration." in done.stdout


def test_integration_install_refuses_an_unknown_name(conveyor_cli) -> None:
    done = conveyor_cli("integration", "install", "rayy", "-y", check=False)
    assert done.returncode == 1
    assert "unknown integration 'rayy'" in done.stderr and "ray" in done.stderr and "aws" in done.stderr


def test_the_flavor_to_extra_mapping_follows_pyproject() -> None:
    import tomllib

    from conveyor.integrations import integration_for_flavor, list_integrations
    from conveyor.stack.registry import BUILTIN_FLAVORS

    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert {i.extra for i in list_integrations()} <= set(extras)
    expected = {"sagemaker": "aws", "vertex": "gcp", "azureml": "azure", "modal": "modal", "ray": "ray",
                "spark": "spark", "ssh": "ssh", "docker": "docker", "kubernetes": "kubernetes", "slurm": "slurm"}
    for ctype, flavors in BUILTIN_FLAVORS.items():
        for flavor in flavors:
            found = integration_for_flavor(ctype.value, flavor)
            if ctype.value == "step_operator":
                assert (found.extra if found else None) == expected.get(flavor), flavor
    assert integration_for_flavor("artifact_store", "s3").extra == "aws"  # type: ignore[union-attr]
    assert integration_for_flavor("artifact_store", "local") is None


FLAVOR_PACKAGES = {"azureml": "AzureML", "docker": "Docker", "fault": "Fault", "kubernetes": "Kubernetes",
                   "local": "Local", "modal": "Modal", "ray": "Ray", "sagemaker": "SageMaker", "slurm": "Slurm",
                   "spark": "Spark", "ssh": "SSH", "vertex": "Vertex"}
HEAVY = ("boto3", "botocore", "ray", "modal", "kubernetes", "docker", "pyspark", "asyncssh", "azure", "google")

LIGHT_IMPORT = '''
import sys
before = set(sys.modules)  # namespace packages some SDKs' .pth files create at start-up do not count
import conveyor.step_operators.{pkg} as package
assert not any(m == "pydantic" or m.startswith("pydantic.") for m in sys.modules), "the package imported pydantic"
from conveyor.step_operators.{pkg} import {pre}StepOperatorSettings, {pre}StepOperatorConfig, {pre}StepOperatorFlavor
{alias}
flavor = {pre}StepOperatorFlavor()
assert flavor.name == "{pkg}" and flavor.settings_class is {pre}StepOperatorSettings
assert flavor.config_class is {pre}StepOperatorConfig
print(sorted(m for m in set(sys.modules) - before if m.split(".")[0] in {heavy!r}))
'''


@pytest.mark.parametrize("pkg", sorted(FLAVOR_PACKAGES))
def test_every_flavor_exports_its_settings_from_a_light_documented_path(pkg: str) -> None:
    pre = FLAVOR_PACKAGES[pkg]
    alias = ("from conveyor.step_operators.sagemaker import SagemakerStepOperatorSettings\n"
             "assert SagemakerStepOperatorSettings is SageMakerStepOperatorSettings" if pkg == "sagemaker" else "")
    code = LIGHT_IMPORT.format(pkg=pkg, pre=pre, alias=alias, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"importing the settings of {pkg!r} imported an SDK: {done.stdout}"
    page = (Path(__file__).parents[1] / "docs" / "step_operators" / f"{pkg}.md").read_text()
    assert f"from conveyor.step_operators.{pkg} import {pre}StepOperatorSettings" in page
