"""The reference docs' step operator contract, whole (issue 13 §1): code written against ZenML's seeds runs after
changing only its imports.

- a custom flavor's `entrypoint_config_class` builds the command its operator is handed, extra options included;
- `StepRunInfo` carries what the seeds name, `force_write_logs()` writes the held log, `get_settings(info)`;
- the seeds' monitoring snippet (`get_pipeline_run("training_pipeline", "run_name")`) and `ExecutionStatus`;
- settings for another flavor than the step's operator's are reported once, not silently ignored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conveyor import Client

FLAVOR_MODULE = '''
    from typing import TYPE_CHECKING, Type

    from conveyor.config import BaseSettings
    from conveyor.step_operators import BaseStepOperatorConfig, BaseStepOperatorFlavor

    if TYPE_CHECKING:
        from my_pkg.step_operator import RegionStepOperator


    class RegionStepOperatorConfig(BaseStepOperatorConfig):
        region: str = "eu-test-1"


    class RegionStepOperatorSettings(BaseSettings):
        queue: str = "default-queue"


    class RegionStepOperatorFlavor(BaseStepOperatorFlavor):
        @property
        def name(self) -> str:
            return "region"

        @property
        def config_class(self) -> Type[RegionStepOperatorConfig]:
            return RegionStepOperatorConfig

        @property
        def settings_class(self) -> Type[RegionStepOperatorSettings]:
            return RegionStepOperatorSettings

        @property
        def implementation_class(self) -> Type["RegionStepOperator"]:
            from my_pkg.step_operator import RegionStepOperator

            return RegionStepOperator
'''

# written as the seeds write a custom step operator: launch() only, a custom entrypoint configuration
IMPLEMENTATION_MODULE = '''
    import json
    import os
    import subprocess
    from typing import Any, Dict, List, Set, Type

    from conveyor.step_operators import BaseStepOperator, StepOperatorEntrypointConfiguration, StepRunInfo

    REGION_OPTION = "region"


    class RegionEntrypointConfiguration(StepOperatorEntrypointConfiguration):
        @classmethod
        def get_entrypoint_options(cls) -> Set[str]:
            return super().get_entrypoint_options() | {REGION_OPTION}

        @classmethod
        def get_entrypoint_arguments(cls, **kwargs: Any) -> List[str]:
            return super().get_entrypoint_arguments(**kwargs) + [f"--{REGION_OPTION}", os.environ["STEP_REGION"]]


    class RegionStepOperator(BaseStepOperator):
        @property
        def entrypoint_config_class(self) -> Type[StepOperatorEntrypointConfiguration]:
            return RegionEntrypointConfiguration

        def launch(self, info: StepRunInfo, entrypoint_command: List[str], environment: Dict[str, str]) -> None:
            settings = self.get_settings(info)
            info.force_write_logs()
            seen = {
                "command": entrypoint_command,
                "docker_requirements": info.pipeline.docker_settings.requirements,
                "docker_settings_type": type(info.pipeline.docker_settings).__name__,
                "cpu_count": info.config.resource_settings.cpu_count,
                "run_name": info.run_name,
                "pipeline_step_name": info.pipeline_step_name,
                "run_id": info.run_id,
                "step_run_id": info.step_run_id,
                "settings_type": type(settings).__name__,
                "queue": settings.queue,
            }
            with open(os.path.join(os.environ["SEEN_DIR"], f"{info.pipeline_step_name}.json"), "w") as fh:
                json.dump(seen, fh)
            subprocess.run(entrypoint_command, env={**os.environ, **environment}, check=True)
'''

PIPELINE = '''
    from conveyor import pipeline, step
    from conveyor.config import ResourceSettings
    from conveyor.images.settings import DockerSettings


    @step(step_operator="region_op", settings={"resources": ResourceSettings(cpu_count=2),
                                               "step_operator.region": {"queue": "gpu-queue"}})
    def train() -> int:
        return 41


    @step(step_operator="region_op")
    def evaluate(score: int) -> int:
        return score + 1


    @pipeline(enable_cache=False, settings={"docker": DockerSettings(requirements=["scikit-learn"])})
    def region_pipeline():
        evaluate(train())


    if __name__ == "__main__":
        region_pipeline()
'''


def _write(path: Path, text: str) -> None:
    path.write_text(textwrap.dedent(text))


def _run_script(project: Path, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, script], cwd=project, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "CONVEYOR_QUIET": "1", **env})
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_custom_entrypoint_config_and_step_run_info_reach_a_launch_only_operator(conveyor_cli, project: Path) -> None:
    (project / "my_pkg").mkdir()
    _write(project / "my_pkg" / "__init__.py", "")
    _write(project / "my_pkg" / "flavors.py", FLAVOR_MODULE)
    _write(project / "my_pkg" / "step_operator.py", IMPLEMENTATION_MODULE)
    _write(project / "region_pipeline.py", PIPELINE)
    conveyor_cli("step-operator", "flavor", "register", "my_pkg.flavors.RegionStepOperatorFlavor")
    conveyor_cli("step-operator", "register", "region_op", "--flavor=region")
    conveyor_cli("stack", "update", "default", "-s", "region_op")
    seen_dir = project / "seen"
    seen_dir.mkdir()

    _run_script(project, "region_pipeline.py", SEEN_DIR=str(seen_dir), STEP_REGION="mars-north-2")

    run = Client().list_pipeline_runs()[0]
    run = Client().get_pipeline_run(run.id)
    assert run.status == "completed"
    assert run.steps["evaluate"].outputs["output"].load() == 42  # the step's process accepted the extra option
    train = json.loads((seen_dir / "train.json").read_text())
    evaluate = json.loads((seen_dir / "evaluate.json").read_text())
    command = train["command"]
    assert command[command.index("--region") + 1] == "mars-north-2"  # the subclass's own argument
    assert command[command.index("--step_run_id") + 1] == run.steps["train"].id
    assert train["docker_settings_type"] == "DockerSettings"
    assert train["docker_requirements"] == ["scikit-learn"]  # the pipeline's "docker" settings, under the step's
    assert train["cpu_count"] == 2
    assert (train["run_name"], train["run_id"]) == (run.name, run.id)
    assert train["pipeline_step_name"] == "train"
    assert train["step_run_id"] == run.steps["train"].id
    assert evaluate["step_run_id"] == run.steps["evaluate"].id
    # get_settings(info): the step's settings, or the flavor's defaults where the step gave none
    assert (train["settings_type"], train["queue"]) == ("RegionStepOperatorSettings", "gpu-queue")
    assert (evaluate["settings_type"], evaluate["queue"]) == ("RegionStepOperatorSettings", "default-queue")


def test_entrypoint_config_class_reaches_dry_run_and_defaults_to_the_base_class(project: Path) -> None:
    from conveyor.execution.launcher import entrypoint_request
    from conveyor.step_operators import StepOperatorEntrypointConfiguration
    from conveyor.step_operators.local.operator import LocalStepOperator

    assert LocalStepOperator.entrypoint_config_class.fget(None) is StepOperatorEntrypointConfiguration  # type: ignore[attr-defined]

    class WithQueue(StepOperatorEntrypointConfiguration):
        @classmethod
        def get_entrypoint_options(cls) -> set[str]:
            return super().get_entrypoint_options() | {"queue"}

        @classmethod
        def get_entrypoint_arguments(cls, **kwargs: object) -> list[str]:
            return super().get_entrypoint_arguments(**kwargs) + ["--queue", "fast"]

    from types import SimpleNamespace

    info = SimpleNamespace(job_uri="/s/job.json", pipeline_step_name="train", step_run_id="abc", run_id="r")
    store = SimpleNamespace(config=SimpleNamespace(remote_environment=dict, remote_options=dict))
    command, _ = entrypoint_request(info, store, WithQueue)  # type: ignore[arg-type]
    assert command[-8:] == ["--job", "/s/job.json", "--step_name", "train", "--step_run_id", "abc", "--queue", "fast"]
    default, _ = entrypoint_request(info, store)  # type: ignore[arg-type]
    assert "--queue" not in default


def test_force_write_logs_stores_the_held_log_of_a_remote_store_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A log kept for a store without append is stored every LIVE_LOG_FLUSH_S; force_write_logs() writes it
    now (here the interval is an hour, so only the call can have written it)."""
    from types import SimpleNamespace

    from conveyor.artifacts.store import ArtifactStore
    from conveyor.execution import launcher, logs
    from conveyor.step_operators.info import LogWriter

    monkeypatch.setattr(logs, "LIVE_LOG_FLUSH_S", 3600.0)
    store = ArtifactStore("memory://force-write-logs")
    assert store.local_path("memory://force-write-logs/log.txt") is None
    step = launcher.StepLauncher.__new__(launcher.StepLauncher)
    step.s = SimpleNamespace(artifacts=store, display=SimpleNamespace(log=lambda *_: None))  # type: ignore[assignment]
    step.name = "train"
    writer = LogWriter()
    log_uri = "memory://force-write-logs/log.txt"
    log = step._open_log(log_uri, writer)
    log.append("submitting the job\n")
    assert not store.exists(log_uri)  # held: the timer would write it in an hour
    assert logs.read_log(store, log_uri) == ""  # no chunk either
    writer()
    # while the step runs the log is stored in chunks (execution/logs.py): read as every reader reads it
    assert logs.read_log(store, log_uri) == "submitting the job\n"
    log.append("job started\n")
    log.close()
    assert store.read_text(log_uri) == "submitting the job\njob started\n"
    writer()  # after the step: nothing held, nothing to do


TRAINING_PIPELINE = '''
    from conveyor import pipeline, step


    @step
    def load() -> list[int]:
        return [1, 2, 3]


    @step(step_operator="local_op")
    def train(data: list[int]) -> int:
        return sum(data)


    @pipeline(enable_cache=False)
    def training_pipeline():
        train(load())


    if __name__ == "__main__":
        training_pipeline()
'''

# the seeds (shared/seeds/004_*.txt, beside the repository) "Monitoring Step Execution", verbatim but for the import
MONITORING_SNIPPET = '''
from conveyor.client import Client

client = Client()
run = client.get_pipeline_run("training_pipeline", "run_name")

for step_name, step in run.steps.items():
    print(f"Step: {step_name}")
    print(f"Status: {step.status}")
    print(f"Duration: {step.duration}")
    
    # Check if step used a step operator
    if step.config.step_operator:
        print(f"Step Operator: {step.config.step_operator}")
'''


def test_seed_monitoring_snippet_runs_as_written(conveyor_cli, project: Path) -> None:
    conveyor_cli("step-operator", "register", "local_op", "--flavor=local")
    conveyor_cli("stack", "update", "default", "-s", "local_op")
    _write(project / "training.py", TRAINING_PIPELINE)
    _run_script(project, "training.py")
    _run_script(project, "training.py")
    first, second = sorted(Client().list_pipeline_runs(), key=lambda r: r.start_time)
    # the snippet's "run_name" is a placeholder for the run's name: the only change made to it
    (project / "monitor.py").write_text(MONITORING_SNIPPET.replace('"run_name"', json.dumps(second.name)))

    out = _run_script(project, "monitor.py").stdout

    assert out.splitlines()[:2] == ["Step: load", "Status: completed"]
    assert "Step: train\nStatus: completed\nDuration: 0:00:" in out
    assert out.count("Duration: 0:00:") == 2
    assert out.count("Step Operator: local_op") == 1  # train only: load ran in-process


def test_get_pipeline_run_by_name_id_prefix_and_pipeline_with_execution_status(project: Path) -> None:
    from conveyor import ExecutionStatus as FromPackage
    from conveyor import pipeline, step
    from conveyor.enums import ExecutionStatus
    from conveyor.exceptions import ConveyorError

    @step
    def one() -> int:
        return 1

    @step
    def boom(x: int) -> int:
        raise ValueError("no")

    @pipeline(enable_cache=False)
    def lookup_pipeline() -> None:
        one()

    @pipeline(enable_cache=False)
    def failing_pipeline() -> None:
        boom(one())

    lookup_pipeline()
    lookup_pipeline()
    with pytest.raises(ConveyorError):
        failing_pipeline()
    client = Client()
    runs = sorted(client.list_pipeline_runs("lookup_pipeline"), key=lambda r: r.start_time)
    failed = client.list_pipeline_runs("failing_pipeline")[0]

    assert client.get_pipeline_run(runs[0].name).id == runs[0].id
    assert client.get_pipeline_run(runs[1].id[:10]).id == runs[1].id  # a unique id prefix
    assert client.get_pipeline_run("failing_pipe").id == failed.id  # a unique name prefix
    assert client.get_pipeline_run("lookup_pipeline", runs[1].name).id == runs[1].id  # pipeline name + run name
    assert client.get_pipeline_run("lookup_pipeline", runs[0].id).id == runs[0].id
    with pytest.raises(ConveyorError) as ambiguous:
        client.get_pipeline_run("lookup_pipe")
    assert "matches 2 pipeline runs" in str(ambiguous.value)
    assert runs[0].name in str(ambiguous.value) and runs[1].name in str(ambiguous.value)
    with pytest.raises(ConveyorError, match="no pipeline run"):
        client.get_pipeline_run("lookup_pipe", False)  # ZenML's allow_name_prefix_match=False
    with pytest.raises(ConveyorError, match="pipeline 'nope' has no runs"):
        client.get_pipeline_run("nope", "x")
    with pytest.raises(ConveyorError, match="of pipeline 'lookup_pipeline'"):
        client.get_pipeline_run("lookup_pipeline", failed.name)  # a run of another pipeline

    run = client.get_pipeline_run(runs[1].id)
    assert FromPackage is ExecutionStatus
    assert run.status == ExecutionStatus.COMPLETED == "completed"
    assert isinstance(run.status, ExecutionStatus) and run.status.is_finished and run.status.is_successful
    assert run.steps["one"].status is ExecutionStatus.COMPLETED
    failed_run = client.get_pipeline_run(failed.id)
    assert failed_run.status == ExecutionStatus.FAILED and not failed_run.status.is_successful
    assert failed_run.steps["boom"].status is ExecutionStatus.FAILED
    assert ExecutionStatus.INITIALIZING is ExecutionStatus.PENDING  # ZenML's name for a step not started
    assert json.dumps({"status": run.status}) == '{"status": "completed"}'


MIXED_SETTINGS_PIPELINE = '''
    from conveyor import pipeline, step
    from conveyor.step_operators.sagemaker import SageMakerStepOperatorSettings


    @step(step_operator="local_op", settings={
        "step_operator.sagemaker": SageMakerStepOperatorSettings(instance_type="ml.m5.large"),
        "step_operator.sagmaker": {"instance_type": "ml.m5.large"},
    })
    def train() -> int:
        return 1


    @pipeline(enable_cache=False)
    def mixed_pipeline():
        train()


    if __name__ == "__main__":
        mixed_pipeline()
'''


def test_settings_for_another_flavor_are_reported_once(project: Path) -> None:
    from testkit import add_step_operator

    add_step_operator("local_op", "local")
    _write(project / "mixed.py", MIXED_SETTINGS_PIPELINE)

    done = _run_script(project, "mixed.py")

    other = [line for line in done.stderr.splitlines() if "settings['step_operator.sagemaker'] are ignored" in line]
    assert other == ["conveyor: step 'train': settings['step_operator.sagemaker'] are ignored: the step runs on step "
                     "operator 'local_op', of flavor 'local', which reads 'step_operator.local' (and "
                     "\"step_operator\") only."], done.stderr
    typo = [line for line in done.stderr.splitlines() if "'step_operator.sagmaker'" in line]
    assert len(typo) == 1 and "Did you mean 'step_operator.sagemaker'?" in typo[0], done.stderr
    assert Client().list_pipeline_runs()[0].status == "completed"  # a warning, not an error
