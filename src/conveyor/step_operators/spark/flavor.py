"""The `spark` step operator flavor: config, per-step settings and flavor (light: never imports pyspark)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from conveyor.config.base import BaseSettings
from conveyor.step_operators.base import BaseStepOperatorConfig, BaseStepOperatorFlavor

if TYPE_CHECKING:
    from conveyor.step_operators.spark.operator import SparkStepOperator

#: Spark's own size syntax (JVM style): a number and an optional k/m/g/t/p suffix, `b` allowed, any case
SPARK_SIZE = re.compile(r"^\d+[kmgtp]?b?$", re.IGNORECASE)
_LOCAL = re.compile(r"^local(\[(\*|\d+)(,\s*\d+)?\])?$")


def mib(size: int) -> str:
    """Bytes as whole MiB in Spark's syntax, rounded up ("489m")."""
    return f"{max(1, -(-size // 2**20))}m"


def spark_size(value: str | None, what: str) -> str | None:
    """A Spark setting's size as the JVM takes it: Spark's syntax keeps Spark's meaning ("3g", "3gb" = 3 GiB; a bare
    number is MiB) and loses the `b` (-Xmx refuses "3gb"); our other forms ("1.5GiB", "2.5GB") become whole MiB."""
    if value is None:
        return None
    value = value.strip()
    if SPARK_SIZE.match(value):
        text = value.lower().removesuffix("b")
        return text if text[-1] in "kmgtp" else f"{text}m"
    from conveyor.config.units import parse_memory

    try:
        size = parse_memory(value)
    except ValueError:
        raise ValueError(f"{what} {value!r}: give a size such as '2g', '512m' or '4GB'") from None
    return mib(size)


class SparkStepOperatorConfig(BaseStepOperatorConfig):
    master: str = Field(description=(
        "the cluster: spark://host:7077 (standalone), local[N] (this machine) or k8s://https://api-server:6443"))
    deploy_mode: Literal["client", "cluster"] = Field(default="client", description=(
        "client: the step (the app's driver) runs on this machine; cluster: on the cluster (Kubernetes only)"))
    spark_home: str | None = Field(default=None, description=(
        "Spark installation whose bin/spark-submit runs the step; default: the one bundled with the pyspark package"))
    master_webui: str | None = Field(default=None, description=(
        "the standalone master's web UI, read (GET /json/) to refuse requests no worker can hold and to find the "
        "step's application; default: http://<master host>:8080; 'none' turns the reading off"))
    python: str | None = Field(default=None, description=(
        "interpreter of the driver (spark.pyspark.driver.python); default: the one running Conveyor"))
    executor_python: str | None = Field(default=None, description=(
        "interpreter on the workers (spark.pyspark.python); default: the driver's"))
    submit_args: list[str] = Field(default_factory=list, description=(
        "extra spark-submit arguments for every step, e.g. ['--packages', 'org.apache.spark:spark-avro_2.13:4.0.0']"))
    conf: dict[str, str] = Field(default_factory=dict, description="Spark properties for every step (--conf key=value)")
    poll_interval: float = Field(default=1.0, gt=0, description="longest wait between two status polls, in seconds")
    stop_timeout: float = Field(default=30.0, gt=0, description=(
        "how long cancel() waits for the master to drop the killed application"))

    @field_validator("master")
    @classmethod
    def _master(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("spark://") and len(value) > len("spark://"):
            return value.rstrip("/")
        if value.startswith("k8s://") and len(value) > len("k8s://"):
            return value
        if _LOCAL.match(value):
            return value
        raise ValueError(f"master {value!r}: give spark://host:port (a standalone master), local[N] or "
                         "k8s://https://api-server:port")

    @field_validator("conf", mode="before")
    @classmethod
    def _conf(cls, value: object) -> object:
        if isinstance(value, dict):  # numbers and booleans are fine Spark property values
            return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}
        return value

    @field_validator("master_webui")
    @classmethod
    def _webui(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() in ("", "none", "off"):
            return None if value is None else "none"
        value = value.strip().rstrip("/")
        return value if "://" in value else f"http://{value}"

    @model_validator(mode="after")
    def _deploy_mode(self) -> "SparkStepOperatorConfig":
        if self.deploy_mode == "cluster" and not self.master.startswith("k8s://"):
            kind = "a standalone master" if self.master.startswith("spark://") else "local mode"
            raise ValueError(
                f"deploy_mode 'cluster' with {kind} ({self.master}): Spark cannot run Python applications in cluster "
                "mode there (spark-submit refuses: 'Cluster deploy mode is currently not supported for python "
                "applications on standalone clusters'). Use deploy_mode 'client' (the default): the step is the "
                "driver on this machine and its executors run on the cluster")
        return self


class SparkStepOperatorSettings(BaseSettings):
    executor_cores: int | None = Field(default=None, ge=1, description="cores per executor (spark.executor.cores)")
    executor_memory: str | None = Field(default=None, description="heap per executor, e.g. '2g' (spark.executor.memory)")
    num_executors: int | None = Field(default=None, ge=1, description=(
        "executors of the application (spark.executor.instances; on a standalone master spark.cores.max)"))
    driver_memory: str | None = Field(default=None, description="heap of the driver, e.g. '1g' (spark.driver.memory)")
    conf: dict[str, str] = Field(default_factory=dict, description="Spark properties for this step; they win")

    @field_validator("executor_memory", "driver_memory")
    @classmethod
    def _size(cls, value: str | None, info: object) -> str | None:
        return spark_size(value, getattr(info, "field_name", "size"))

    @field_validator("conf", mode="before")
    @classmethod
    def _conf(cls, value: object) -> object:
        if isinstance(value, dict):
            return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}
        return value


class SparkStepOperatorFlavor(BaseStepOperatorFlavor):
    """Runs a step through spark-submit (the step is the app's driver); ResourceSettings size the executors."""

    name = "spark"

    @property
    def config_class(self) -> type[SparkStepOperatorConfig]:
        return SparkStepOperatorConfig

    @property
    def settings_class(self) -> type[SparkStepOperatorSettings]:
        return SparkStepOperatorSettings

    @property
    def implementation_class(self) -> type["SparkStepOperator"]:
        from conveyor.step_operators.spark.operator import SparkStepOperator

        return SparkStepOperator
