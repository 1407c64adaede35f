"""The `sagemaker` step operator flavor: config, per-step settings and flavor (light: never imports boto3)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pydantic import Field, field_validator, model_validator

from conveyor.config.base import BaseSettings
from conveyor.images.settings import DockerSettings
from conveyor.step_operators.base import BaseStepOperatorConfig, BaseStepOperatorFlavor

if TYPE_CHECKING:
    from conveyor.step_operators.sagemaker.operator import SageMakerStepOperator

_ROLE = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-/]+$")


class SageMakerStepOperatorConfig(BaseStepOperatorConfig):
    role: str = Field(description=(
        "ARN of the IAM execution role the training job runs as (S3 read/write on the artifact store and output "
        "path, secretsmanager:GetSecretValue on conveyor/*, ECR pull, CloudWatch Logs)"))
    region: str | None = Field(default=None, description="AWS region; default: the AWS chain's (AWS_DEFAULT_REGION, profile)")
    instance_type: str | None = Field(default=None, description=(
        "ml.* instance type of every step unless a step sets one; unset: the smallest type of the documented table "
        "that fits the step's ResourceSettings"))
    bucket: str | None = Field(default=None, description=(
        "S3 bucket for the jobs' OutputDataConfig (s3://<bucket>/conveyor/sagemaker); default: the artifact store's "
        "root when it is on S3"))
    output_path: str | None = Field(default=None, description="full s3:// OutputDataConfig path; wins over `bucket`")
    subnets: list[str] = Field(default_factory=list, description="VPC subnets of the training instances")
    security_group_ids: list[str] = Field(default_factory=list, description="VPC security groups (with `subnets`)")
    image: str | None = Field(default=None, description=(
        "ECR image URI (Python with conveyor installed) of every step unless its 'docker' settings name or build one"))
    docker_settings: DockerSettings | None = Field(default=None, description=(
        "image defaults under the pipeline's and step's 'docker' settings (field by field)"))
    docker_host: str | None = Field(default=None, description=(
        "Docker Engine that builds step images from 'docker' settings without an `image`; the image is pushed to the "
        "stack's container registry (ECR: the aws flavor) and SageMaker pulls it by digest"))
    build_network_mode: str | None = Field(default=None, description="network of image builds, e.g. 'host'")
    endpoint_url: str | None = Field(default=None, description=(
        "endpoint of the SageMaker, Secrets Manager and CloudWatch Logs APIs (VPC endpoints, tests); also given to "
        "the step's bootstrap for fetching its secret"))
    poll_interval: float = Field(default=1.0, gt=0, description=(
        "least seconds between two DescribeTrainingJob calls of one job (the status poll and the log follower share "
        "the answer): SageMaker's API rate limits"))
    stop_timeout: float = Field(default=300.0, gt=0, description="how long cancel() waits for the job to stop")
    kms_key_id: str | None = Field(default=None, description="KMS key of the per-job secret and the output data")

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        if not _ROLE.match(value):
            raise ValueError(f"role {value!r} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)")
        return value

    @field_validator("output_path")
    @classmethod
    def _s3(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("s3://") or len(value) <= len("s3://")):
            raise ValueError(f"output_path {value!r} must be an s3://bucket[/prefix] URL")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _vpc(self) -> "SageMakerStepOperatorConfig":
        if bool(self.subnets) != bool(self.security_group_ids):
            raise ValueError("a VPC config needs both subnets and security_group_ids")
        return self


class SageMakerStepOperatorSettings(BaseSettings):
    """Per-step settings under the key "step_operator.sagemaker"."""

    instance_type: str | None = Field(default=None, description="ml.* instance type of this step")
    instance_count: int = Field(default=1, ge=1, description=(
        "instances; every instance runs the step's entrypoint (only for steps that coordinate themselves)"))
    volume_size_in_gb: int = Field(default=30, ge=1, description="size of the ML storage volume")
    max_runtime_in_seconds: int | None = Field(default=None, ge=1, description=(
        "StoppingCondition.MaxRuntimeInSeconds; default: the step's timeout plus a minute, else SageMaker's (1 day)"))
    use_spot_instances: bool = Field(default=False, description="managed spot training")
    max_wait_time_in_seconds: int | None = Field(default=None, ge=1, description=(
        "spot only: how long to wait for spot capacity plus the run (≥ max runtime)"))
    environment: dict[str, str] = Field(default_factory=dict, description=(
        "plain (non-secret) environment of the training container; use settings['environment'] with {{name.key}} "
        "for secrets"))
    tags: dict[str, str] = Field(default_factory=dict, description="tags of the training job")

    @model_validator(mode="after")
    def _spot(self) -> "SageMakerStepOperatorSettings":
        if self.max_wait_time_in_seconds is not None and not self.use_spot_instances:
            raise ValueError("max_wait_time_in_seconds applies only with use_spot_instances=True")
        if (self.max_wait_time_in_seconds is not None and self.max_runtime_in_seconds is not None
                and self.max_wait_time_in_seconds < self.max_runtime_in_seconds):
            raise ValueError("max_wait_time_in_seconds must be at least max_runtime_in_seconds")
        return self


class SageMakerStepOperatorFlavor(BaseStepOperatorFlavor):
    """Runs a step as an Amazon SageMaker training job; ResourceSettings choose the instance type."""

    name = "sagemaker"

    @property
    def config_class(self) -> type[SageMakerStepOperatorConfig]:
        return SageMakerStepOperatorConfig

    @property
    def settings_class(self) -> type[SageMakerStepOperatorSettings]:
        return SageMakerStepOperatorSettings

    @property
    def implementation_class(self) -> type["SageMakerStepOperator"]:
        from conveyor.step_operators.sagemaker.operator import SageMakerStepOperator

        return SageMakerStepOperator


