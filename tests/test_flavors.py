"""Where flavors come from (built-ins, the `conveyor.flavors` entry-point group, CLI-registered sources) and the
step operator API that custom flavors build on."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from conveyor.context import get_context
from conveyor.exceptions import StackError
from conveyor.stack.component import ComponentType
from conveyor.stack.registry import FlavorRegistry
from conveyor.step_operators import (
    BaseStepOperator,
    StepOperatorEntrypointConfiguration,
    StepRunInfo,
    Submission,
)

EP_FLAVOR = '''
    from conveyor.step_operators import BaseStepOperatorFlavor
    from conveyor.step_operators.local.flavor import LocalStepOperatorConfig


    class PluginConfig(LocalStepOperatorConfig):
        region: str = "moon-1"


    class PluginFlavor(BaseStepOperatorFlavor):
        """A flavor shipped by an installed package."""

        name = "plugin_flavor"

        @property
        def config_class(self):
            return PluginConfig

        @property
        def implementation_class(self):
            from conveyor_plugin.impl import PluginOperator

            return PluginOperator
'''


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package with a `conveyor.flavors` entry point, installed the way pip lays one out."""
    site = tmp_path / "site"
    pkg = site / "conveyor_plugin"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(EP_FLAVOR))
    (pkg / "impl.py").write_text("from conveyor.step_operators.local.operator import LocalStepOperator as PluginOperator\n")
    dist = site / "conveyor_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: conveyor-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[conveyor.flavors]\nplugin = conveyor_plugin:PluginFlavor\n")
    monkeypatch.syspath_prepend(str(site))
    return site


def test_entry_point_flavors_are_found_and_usable(installed_plugin: Path) -> None:
    registry = FlavorRegistry(get_context().store)
    sources = registry.sources(ComponentType.STEP_OPERATOR)
    assert sources["plugin_flavor"] == ("conveyor_plugin:PluginFlavor", "entry point")
    flavor = registry.get("step_operator", "plugin_flavor")
    assert flavor.config_class(region="mars-2").region == "mars-2"
    assert flavor.implementation_class.__name__ == "LocalStepOperator"


def test_entry_point_flavor_runs_a_step(installed_plugin: Path, step_operator) -> None:
    from conveyor import pipeline, step

    step_operator("plugged", "plugin_flavor", region="mars-2")

    @step(step_operator="plugged")
    def where() -> str:
        return "ran"

    @pipeline
    def p():
        where()

    run = p()
    assert run.steps["where"].outputs["output"].load() == "ran"
    assert run.steps["where"].config.step_operator_flavor == "plugin_flavor"


def test_entry_point_flavor_is_listed_by_the_cli(installed_plugin: Path, conveyor_cli) -> None:
    env = {"PYTHONPATH": os.pathsep.join([str(installed_plugin), os.environ.get("PYTHONPATH", "")])}
    out = conveyor_cli("step-operator", "flavor", "list", env=env).stdout
    assert "plugin_flavor" in out and "entry point" in out


def test_a_step_operator_must_implement_launch_or_submit() -> None:
    with pytest.raises(TypeError, match="must implement launch"):
        type("Nothing", (BaseStepOperator,), {})


def test_entrypoint_configuration() -> None:
    options = StepOperatorEntrypointConfiguration.get_entrypoint_options()
    assert options == {"job", "step_name", "step_run_id"}
    args = StepOperatorEntrypointConfiguration.get_entrypoint_arguments(job="/a/job.json", step_name="train",
                                                                         step_run_id="abc")
    assert args == ["--job", "/a/job.json", "--step_name", "train", "--step_run_id", "abc"]
    command = StepOperatorEntrypointConfiguration.get_entrypoint_command()
    assert command == [sys.executable, "-m", "conveyor.entrypoints.step_operator"]
    with pytest.raises(ValueError, match="step_run_id"):
        StepOperatorEntrypointConfiguration.get_entrypoint_arguments(job="x", step_name="y")


def test_step_run_info_has_the_reference_fields() -> None:
    fields = set(StepRunInfo.__dataclass_fields__)
    assert {"config", "pipeline", "run_name", "pipeline_step_name", "run_id", "step_run_id"} <= fields


def test_submission_receipt_round_trips() -> None:
    sub = Submission(flavor="slurm", job_name="conveyor-x-1", backend_id="1234", data={"partition": "a100"})
    assert Submission.from_json(sub.to_json()) == sub
    import json

    assert Submission.from_json(json.dumps(sub.to_json())) == sub


def test_custom_flavor_sources_are_validated(project: Path) -> None:
    registry = get_context().registry
    with pytest.raises(StackError, match="cannot import module"):
        registry.register_custom("no_such_pkg.flavors.X", ComponentType.STEP_OPERATOR)
    (project / "not_a_flavor.py").write_text("class Thing: pass\n")
    with pytest.raises(StackError, match="not a Flavor subclass"):
        registry.register_custom("not_a_flavor.Thing", ComponentType.STEP_OPERATOR)
