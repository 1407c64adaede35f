"""The `kubernetes` step operator flavor: config, per-step settings and flavor (light: never imports the client)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from conveyor.config.base import BaseSettings, StrictModel
from conveyor.images.settings import DockerSettings
from conveyor.step_operators.base import BaseStepOperatorConfig, BaseStepOperatorFlavor

if TYPE_CHECKING:
    from conveyor.step_operators.kubernetes.operator import KubernetesStepOperator


class KubernetesPodSettings(StrictModel):
    """Pod-level knobs, written as in a Kubernetes manifest (camelCase inside the dicts).

    Operator config sets the defaults; a step's settings add to them: dicts are merged (the step wins),
    lists are appended, `affinity` is replaced.
    """

    node_selectors: dict[str, str] = Field(default_factory=dict, description="pod spec nodeSelector")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="pod spec tolerations")
    affinity: dict[str, Any] | None = Field(default=None, description="pod spec affinity (replaces, never merges)")
    labels: dict[str, str] = Field(default_factory=dict, description="labels on the Job and its pod")
    annotations: dict[str, str] = Field(default_factory=dict, description="annotations on the Job and its pod")
    volumes: list[dict[str, Any]] = Field(default_factory=list, description="pod spec volumes")
    volume_mounts: list[dict[str, Any]] = Field(default_factory=list, description="volumeMounts of the step container")

    def merged(self, other: "KubernetesPodSettings | None") -> "KubernetesPodSettings":
        """These defaults with a step's additions on top."""
        if other is None:
            return self
        return KubernetesPodSettings(
            node_selectors={**self.node_selectors, **other.node_selectors},
            tolerations=[*self.tolerations, *other.tolerations],
            affinity=other.affinity if other.affinity is not None else self.affinity,
            labels={**self.labels, **other.labels}, annotations={**self.annotations, **other.annotations},
            volumes=[*self.volumes, *other.volumes], volume_mounts=[*self.volume_mounts, *other.volume_mounts])


class KubernetesStepOperatorConfig(BaseStepOperatorConfig):
    kubernetes_context: str | None = Field(default=None, description=(
        "kubeconfig context to use; default: the kubeconfig's current context"))
    kubeconfig: str | None = Field(default=None, description="kubeconfig file; default: $KUBECONFIG or ~/.kube/config")
    incluster: bool = Field(default=False, description=(
        "use the pod's service account (Conveyor itself runs inside the cluster) instead of a kubeconfig"))
    kubernetes_namespace: str = Field(default="default", description="namespace of the step Jobs")
    service_account_name: str | None = Field(default=None, description="service account the step pods run as")
    image: str | None = Field(default=None, description=(
        "prebuilt image (Python with conveyor installed) of every step pod unless a step has 'docker' settings or "
        "its own image"))
    image_pull_policy: str | None = Field(default=None, description="Always, IfNotPresent or Never")
    image_pull_secrets: list[str] = Field(default_factory=list, description="names of Secrets for pulling the image")
    docker_settings: DockerSettings | None = Field(default=None, description=(
        "image defaults under the pipeline's and step's 'docker' settings (field by field)"))
    docker_host: str | None = Field(default=None, description=(
        "Docker Engine that builds step images from 'docker' settings without an `image` (default: DOCKER_HOST); "
        "the built image is pushed to the stack's container registry and the pods pull it from there by digest"))
    build_network_mode: str | None = Field(default=None, description="network of image builds, e.g. 'host'")
    pod_settings: KubernetesPodSettings = Field(default_factory=KubernetesPodSettings)
    ttl_seconds_after_finished: int | None = Field(default=3600, ge=0, description=(
        "Kubernetes deletes a finished Job (and its pod and log) this long after it ends; None keeps it"))
    poll_interval: float = Field(default=1.0, gt=0, description="longest wait between two status polls, in seconds")
    stop_timeout: float = Field(default=60.0, gt=0, description="how long cancel() waits for the Job and pod to go")
    check_node_resources: bool = Field(default=True, description=(
        "refuse before submission a step no node's allocatable resources can hold (needs `list nodes`; skipped when "
        "forbidden). Turn off when an autoscaler adds bigger nodes on demand"))
    mount_local_artifact_store: bool = Field(default=False, description=(
        "mount a local artifact store's directory into the pod at the same path (hostPath): only for single-node "
        "clusters (kind, minikube) or a path every node shares; otherwise use a remote store such as s3"))

    @field_validator("image_pull_policy")
    @classmethod
    def _policy(cls, value: str | None) -> str | None:
        if value is not None and value not in ("Always", "IfNotPresent", "Never"):
            raise ValueError(f"image_pull_policy {value!r}: use Always, IfNotPresent or Never")
        return value


class KubernetesStepOperatorSettings(BaseSettings):
    """Per-step overrides under the key "step_operator.kubernetes"."""

    image: str | None = Field(default=None, description="image of this step's pod")
    service_account_name: str | None = None
    pod_settings: KubernetesPodSettings | None = Field(default=None, description="added to the operator's pod_settings")
    env_from_secrets: list[str] = Field(default_factory=list, description=(
        "existing Secrets whose keys all become environment variables of the step (envFrom)"))
    secret_env: dict[str, str] = Field(default_factory=dict, description=(
        "environment variable -> 'secret-name/key' of an existing Secret (valueFrom.secretKeyRef)"))

    @field_validator("secret_env")
    @classmethod
    def _refs(cls, value: dict[str, str]) -> dict[str, str]:
        for var, ref in value.items():
            if ref.count("/") != 1 or not all(ref.split("/")):
                raise ValueError(f"secret_env {var!r}: {ref!r} must be 'secret-name/key'")
        return value


class KubernetesStepOperatorFlavor(BaseStepOperatorFlavor):
    """Runs a step as a Kubernetes batch/v1 Job; ResourceSettings become container requests and limits."""

    name = "kubernetes"

    @property
    def config_class(self) -> type[KubernetesStepOperatorConfig]:
        return KubernetesStepOperatorConfig

    @property
    def settings_class(self) -> type[KubernetesStepOperatorSettings]:
        return KubernetesStepOperatorSettings

    @property
    def implementation_class(self) -> type["KubernetesStepOperator"]:
        from conveyor.step_operators.kubernetes.operator import KubernetesStepOperator

        return KubernetesStepOperator
