"""A custom flavor written the way the reference docs describe runs a real pipeline step.

Config and flavor live in one module, the implementation (only `launch()`, with subprocess) in another, and
both are registered through the CLI exactly as a user would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conveyor import Client

FLAVOR_MODULE = '''
    from typing import TYPE_CHECKING, Type

    from conveyor.step_operators import BaseStepOperatorConfig, BaseStepOperatorFlavor

    if TYPE_CHECKING:
        from my_pkg.step_operator import MyStepOperator


    class MyStepOperatorConfig(BaseStepOperatorConfig):
        """Where the job runs; validated when the component is registered."""

        nice_level: int = 0


    class MyStepOperatorFlavor(BaseStepOperatorFlavor):
        @property
        def name(self) -> str:
            return "my_custom"

        @property
        def config_class(self) -> Type[MyStepOperatorConfig]:
            return MyStepOperatorConfig

        @property
        def implementation_class(self) -> Type["MyStepOperator"]:
            from my_pkg.step_operator import MyStepOperator

            return MyStepOperator
'''

IMPLEMENTATION_MODULE = '''
    import os
    import subprocess
    from typing import Dict, List

    from conveyor.step_operators import BaseStepOperator, StepRunInfo


    class MyStepOperator(BaseStepOperator):
        def launch(self, info: StepRunInfo, entrypoint_command: List[str], environment: Dict[str, str]) -> None:
            resources = info.config.resource_settings
            env = {**os.environ, **environment, "MY_OPERATOR_STEP": info.pipeline_step_name}
            if resources.cpu_count:
                env["OMP_NUM_THREADS"] = str(int(resources.cpu_count))
            command = ["nice", "-n", str(self.config.nice_level), *entrypoint_command]
            subprocess.run(command, env=env, check=True)
'''

PIPELINE = '''
    import os
    import sys

    from conveyor import pipeline, step
    from conveyor.config import ResourceSettings


    @step
    def load() -> list[int]:
        return [1, 2, 3]


    @step(step_operator="my_op", settings={"resources": ResourceSettings(cpu_count=2)})
    def train(data: list[int]) -> dict:
        print("training on my operator", flush=True)
        if os.environ.get("FAIL_TRAINING"):
            raise ArithmeticError("gradient exploded")
        return {"weights": sum(data), "where": os.environ["MY_OPERATOR_STEP"], "threads": os.environ["OMP_NUM_THREADS"],
                "niceness": os.nice(0)}


    @pipeline(enable_cache=False)
    def custom_pipeline():
        train(load())


    if __name__ == "__main__":
        custom_pipeline()
'''


def _write(path: Path, text: str) -> None:
    path.write_text(textwrap.dedent(text))


def test_custom_launch_only_flavor_runs_a_pipeline_step(conveyor_cli, project: Path) -> None:
    (project / "my_pkg").mkdir()
    _write(project / "my_pkg" / "__init__.py", "")
    _write(project / "my_pkg" / "flavors.py", FLAVOR_MODULE)
    _write(project / "my_pkg" / "step_operator.py", IMPLEMENTATION_MODULE)
    _write(project / "custom_pipeline.py", PIPELINE)

    conveyor_cli("step-operator", "flavor", "register", "my_pkg.flavors.MyStepOperatorFlavor")
    conveyor_cli("step-operator", "register", "my_op", "--flavor=my_custom", "--nice_level=5")
    conveyor_cli("stack", "update", "default", "-s", "my_op")
    assert "my_op" in conveyor_cli("stack", "describe", "default").stdout

    env = {**os.environ, "CONVEYOR_QUIET": "1"}
    done = subprocess.run([sys.executable, "custom_pipeline.py"], cwd=project, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr

    run = Client().list_pipeline_runs()[0]
    train = Client().get_pipeline_run(run.id).steps["train"]
    assert train.status == "completed"
    assert train.config.step_operator == "my_op"
    assert train.config.step_operator_flavor == "my_custom"
    assert train.outputs["output"].load() == {"weights": 6, "where": "train", "threads": "2", "niceness": 5}
    assert "training on my operator" in train.logs()  # tee'd by the entrypoint: launch() gave us no log stream

    failed = subprocess.run([sys.executable, "custom_pipeline.py"], cwd=project, capture_output=True, text=True,
                            env={**env, "FAIL_TRAINING": "1"}, timeout=120)
    assert failed.returncode != 0
    assert "ArithmeticError: gradient exploded" in failed.stderr
    assert 'raise ArithmeticError("gradient exploded")' in failed.stderr  # the remote traceback reaches the user
    assert Client().list_pipeline_runs()[0].status == "failed"
