"""The step operator contract (design.md §4), and the wrapper that lets a `launch()`-only flavor satisfy it."""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar, Iterator

from pydantic import Field, field_validator

from conveyor.config.base import BaseSettings
from conveyor.exceptions import InfrastructureError
from conveyor.stack.component import ComponentType, StackComponent, StackComponentConfig
from conveyor.stack.flavor import Flavor
from conveyor.step_operators.entrypoint import STEP_RUN_ID_OPTION, StepOperatorEntrypointConfiguration
from conveyor.step_operators.info import StatusReport, StepRunInfo, Submission


class BaseStepOperatorConfig(StackComponentConfig):
    """Fields every step operator has; flavors add their own."""

    pending_timeout: float | None = Field(default=None, description="seconds a job may wait in a queue before it is cancelled")
    infrastructure_retries: int = Field(default=2, ge=0, description="re-submissions after preemption, node failure or a lost job")

    @field_validator("pending_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        from conveyor.config.units import parse_duration

        return None if value in (None, "", "none") else parse_duration(value)


class _Launch(threading.Thread):
    def __init__(self, operator: "BaseStepOperator", info: StepRunInfo, command: list[str], env: dict[str, str]) -> None:
        super().__init__(name=f"launch-{info.pipeline_step_name}", daemon=True)
        self.operator, self.info, self.command, self.env = operator, info, command, env
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.operator.launch(self.info, self.command, self.env)
        except BaseException as err:  # noqa: BLE001 - reported through get_status
            self.error = err


class BaseStepOperator(StackComponent):
    """Implement either the full contract (`submit`, `get_status`, `cancel`, `logs`, ...) or only `launch()`."""

    TYPE: ClassVar[ComponentType] = ComponentType.STEP_OPERATOR
    #: True when `logs()` yields the step's output; otherwise the entrypoint tees it into the artifact store.
    streams_logs: ClassVar[bool] = False
    #: True when the step runs where our filesystem is not shared: its code travels as a content-hashed archive.
    needs_code_archive: ClassVar[bool] = False
    #: True when the backend shows the job's environment to others (Ray puts runtime_env env_vars in its
    #: workers' argv): secret variables then travel sealed, and the key as a 0600 file beside the job spec.
    exposes_environment: ClassVar[bool] = False
    #: True when the step's own process writes `logs.txt` (redacted there) on a local artifact store, so the
    #: launcher only displays what `logs()` streams (`local`, `spark`); only read when `streams_logs` is True.
    stores_logs: ClassVar[bool] = False
    #: the longest wait between two `get_status` calls when the flavor's config has no `poll_interval` field
    DEFAULT_POLL_INTERVAL: ClassVar[float] = 2.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._launches: dict[str, _Launch] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("_abstract", False) and not (cls._overrides("launch") or cls._overrides("submit")):
            raise TypeError(f"{cls.__name__} must implement launch() (simple contract) or submit() (full contract)")

    @classmethod
    def _overrides(cls, method: str) -> bool:
        return getattr(cls, method) is not getattr(BaseStepOperator, method)

    @property
    def config(self) -> BaseStepOperatorConfig:
        return self._config  # type: ignore[return-value]

    @property
    def simple_contract(self) -> bool:
        return not self._overrides("submit")

    @property
    def poll_interval(self) -> float:
        """The longest wait between two status polls (polling starts at 50 ms and backs off to this): the flavor's
        `poll_interval` config field where it has one, else DEFAULT_POLL_INTERVAL."""
        value = getattr(self.config, "poll_interval", None)  # a flavor config field, not declared on the base
        return self.DEFAULT_POLL_INTERVAL if value is None else float(value)

    def wait_for_change(self, submission: Submission, timeout: float) -> bool | None:
        """Block until the job may have changed state, at most `timeout` seconds (the launcher passes <= 0.2 s),
        so that a finished job is noticed at once rather than at the next poll (`local` waits on the process).

        Return False when this operator cannot wait (the default): the launcher then sleeps its poll delay itself,
        waking at once on a stop. Anything else (True; None from a flavor written before this returned a value)
        means it waited.
        """
        return False

    @property
    def entrypoint_config_class(self) -> type[StepOperatorEntrypointConfiguration]:
        """Builds the `entrypoint_command` this operator is handed; override to add entrypoint options."""
        return StepOperatorEntrypointConfiguration

    def get_settings(self, info: StepRunInfo) -> BaseSettings | None:
        """This operator's settings for the step (its flavor's settings class), defaults where the step gave none;
        None when the flavor has no settings class."""
        if info.config.operator_settings is not None:
            return info.config.operator_settings
        from conveyor.context import get_context

        model = get_context().registry.get(self.TYPE, self.flavor).settings_class
        return model() if model is not None else None

    # -- checks before anything runs --------------------------------------------------------------
    def check_resources(self, info: StepRunInfo) -> None:
        """Raise ResourceUnavailableError when the request can never be honoured here."""

    def prepare_step(self, info: StepRunInfo, *, store_root: str, code_root: str | None) -> None:
        """Slow preparation before the run exists (a container flavor builds the step's image here), so that a
        failure leaves no run behind."""

    # -- full contract ----------------------------------------------------------------------------
    def submit(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> Submission:
        job = _Launch(self, info, entrypoint_command, environment)
        self._launches[info.job_name] = job
        job.start()
        return Submission(flavor=self.flavor, job_name=info.job_name,
                          data={"mode": "launch", "step_run_id": info.step_run_id})

    def get_status(self, submission: Submission) -> StatusReport:
        job = self._launches.get(submission.job_name)
        if job is None:
            return StatusReport("lost", "the process that called launch() is gone")
        if job.is_alive():
            return StatusReport("running")
        if job.error is not None:
            if isinstance(job.error, InfrastructureError):
                return StatusReport("lost", str(job.error))
            return StatusReport("failed", f"launch() raised {type(job.error).__name__}: {job.error}")
        return StatusReport("completed")

    def cancel(self, submission: Submission) -> None:
        """Kill every process running this step run's entrypoint (launch() gives us no handle)."""
        from conveyor.utils.procs import kill_pids, pids_with_marker

        step_run_id = submission.data.get("step_run_id")
        if step_run_id:
            kill_pids(pids_with_marker(f"--{STEP_RUN_ID_OPTION} {step_run_id}"))

    def logs(self, submission: Submission, follow: bool = False) -> Iterator[str]:
        return iter(())

    def dry_run(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> dict[str, Any]:
        return {
            "flavor": self.flavor,
            "job_name": info.job_name,
            "command": entrypoint_command,
            "environment": sorted(environment),
            "resources": info.config.resource_settings.model_dump(exclude_none=True),
        }

    def cleanup(self, submission: Submission) -> None:
        self._launches.pop(submission.job_name, None)

    def attempt_details(self, submission: Submission) -> dict[str, Any]:
        """What the backend says about the attempt beyond its status reports, for the attempt's record (store
        table step_attempts): `image_digest` (container flavors), `host` (the node, where the step's own process
        cannot say). Called right after `submit`, without asking the backend again; {} when there is nothing.

        The backend job id needs no hook: it is `Submission.backend_id`; the queue reason neither: it is the
        message of a queued `StatusReport`."""
        return {}

    # -- simple contract --------------------------------------------------------------------------
    def launch(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> None:
        """Run the step synchronously. Full-contract flavors get this for free: submit, then wait."""
        submission = self.submit(info, entrypoint_command, environment)
        delay = 0.05
        try:
            while not (report := self.get_status(submission)).terminal:
                time.sleep(delay)
                delay = min(delay * 1.5, 2.0)
        except BaseException:
            self.cancel(submission)
            raise
        finally:
            self.cleanup(submission)
        if report.state != "completed":
            raise RuntimeError(f"step job {submission.job_name} ended {report.state}: {report.message}")


BaseStepOperator._abstract = True  # type: ignore[attr-defined]


class BaseStepOperatorFlavor(Flavor):
    """Base of every step operator flavor."""

    @property
    def type(self) -> ComponentType:
        return ComponentType.STEP_OPERATOR

    @property
    def config_class(self) -> type[BaseStepOperatorConfig]:
        return BaseStepOperatorConfig
