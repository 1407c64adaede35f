"""The `azureml` step operator flavor: config, per-step settings and flavor (light: never imports azure-ai-ml)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from conveyor.config.base import BaseSettings
from conveyor.images.settings import DockerSettings
from conveyor.step_operators.base import BaseStepOperatorConfig, BaseStepOperatorFlavor

if TYPE_CHECKING:
    from conveyor.step_operators.azureml.operator import AzureMLStepOperator

JobTier = Literal["Spot", "Basic", "Standard", "Premium"]


class AzureMLStepOperatorConfig(BaseStepOperatorConfig):
    subscription_id: str = Field(description="Azure subscription of the workspace")
    resource_group: str = Field(description="resource group of the workspace")
    workspace_name: str = Field(description="Azure Machine Learning workspace")
    compute_target_name: str | None = Field(default=None, description=(
        "compute cluster the jobs run on; leave out for serverless compute (instance_type, or one chosen from "
        "ResourceSettings)"))
    instance_type: str | None = Field(default=None, description=(
        "serverless VM size, e.g. Standard_NC24ads_A100_v4; default: the smallest documented size that holds the "
        "step's ResourceSettings"))
    instance_count: int = Field(default=1, ge=1, description="nodes of a serverless job")
    environment_name: str | None = Field(default=None, description=(
        "registered Azure ML environment ('name:version' or 'name@latest') with conveyor installed, instead of an "
        "image"))
    image: str | None = Field(default=None, description=(
        "prebuilt image (Python with conveyor installed) unless a step has 'docker' settings or its own image"))
    docker_settings: DockerSettings | None = Field(default=None, description=(
        "image defaults under the pipeline's and step's 'docker' settings (field by field)"))
    docker_host: str | None = Field(default=None, description=(
        "Docker Engine that builds step images from 'docker' settings without an `image`; the image is pushed to the "
        "stack's container registry (the workspace's ACR: the azure flavor) and the job pulls it by digest"))
    build_network_mode: str | None = Field(default=None, description="network of image builds, e.g. 'host'")
    experiment_name: str = Field(default="conveyor", description="experiment the jobs are grouped under")
    key_vault_url: str | None = Field(default=None, description=(
        "Azure Key Vault (https://NAME.vault.azure.net) for the step's secrets and artifact store credentials: "
        "one Key Vault secret per variable and job, deleted when the step ends. Needed only when there are any"))
    identity_client_id: str | None = Field(default=None, description=(
        "client id of the user-assigned managed identity the job runs as (it reads the job's Key Vault secrets "
        "and, with an abfs:// store, the artifacts); default: the compute's identity"))
    job_tier: JobTier | None = Field(default=None, description=(
        "serverless queue tier; 'Spot' runs on low-priority VMs that may be preempted (retried as infrastructure)"))
    cloud: str | None = Field(default=None, description=(
        "Azure cloud: AzureCloud (default), AzureChinaCloud or AzureUSGovernment; with resource_manager_url, the "
        "name it is known by"))
    resource_manager_url: str | None = Field(default=None, description=(
        "Azure Resource Manager endpoint of a cloud the SDK does not know by name (Azure Stack Hub, a private "
        "cloud), e.g. https://management.local.azurestack.external; its other endpoints are read from "
        "<resource_manager_url>/metadata/endpoints, as `az cloud register` does"))
    poll_interval: float = Field(default=2.0, gt=0, description="seconds between two reads of a running job's log")
    stop_timeout: float = Field(default=120.0, gt=0, description="how long cancel() waits for the job to end")
    tags: dict[str, str] = Field(default_factory=dict, description="tags on every job")

    @model_validator(mode="after")
    def _one_compute(self) -> "AzureMLStepOperatorConfig":
        if self.compute_target_name and self.instance_type:
            raise ValueError("give compute_target_name (a compute cluster) or instance_type (serverless), not both")
        return self


class AzureMLStepOperatorSettings(BaseSettings):
    """Per-step overrides under the key "step_operator.azureml"."""

    compute_target_name: str | None = Field(default=None, description="compute cluster of this step")
    instance_type: str | None = Field(default=None, description="serverless VM size of this step")
    instance_count: int | None = Field(default=None, ge=1)
    environment_name: str | None = None
    image: str | None = Field(default=None, description="image of this step")
    job_tier: JobTier | None = None
    shm_size: str | None = Field(default=None, description="shared memory of the container, e.g. '16g'")
    tags: dict[str, str] = Field(default_factory=dict, description="added to the operator's tags")

    @model_validator(mode="after")
    def _one_compute(self) -> "AzureMLStepOperatorSettings":
        if self.compute_target_name and self.instance_type:
            raise ValueError("give compute_target_name or instance_type, not both")
        return self


class AzureMLStepOperatorFlavor(BaseStepOperatorFlavor):
    """Runs a step as an Azure Machine Learning command job; ResourceSettings choose a serverless VM size."""

    name = "azureml"

    @property
    def config_class(self) -> type[AzureMLStepOperatorConfig]:
        return AzureMLStepOperatorConfig

    @property
    def settings_class(self) -> type[AzureMLStepOperatorSettings]:
        return AzureMLStepOperatorSettings

    @property
    def implementation_class(self) -> type["AzureMLStepOperator"]:
        from conveyor.step_operators.azureml.operator import AzureMLStepOperator

        return AzureMLStepOperator
