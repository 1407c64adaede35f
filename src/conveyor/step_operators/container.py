"""The middle floor of the container flavors (docker, kubernetes, sagemaker, vertex, azureml, modal).

A container flavor runs the step's entrypoint in an image somewhere that shares no filesystem with us. What that
takes is the same everywhere, so it lives here once: which image the step runs in (its own, the operator's, or one
built by content hash from the "docker" settings through `conveyor.images`), building it before the run exists
(`prepare_step`) and pushing it to the stack's container registry (the job gets it by digest), the code archive,
the fsspec package the artifact store needs inside the image, and which variables may travel in plain sight
(everything else goes through the backend's secret mechanism). A flavor writes only what is its own: how a job is
described to its backend and followed there.

Light: the docker SDK and the image builder are imported on first use.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from conveyor.exceptions import ResourceUnavailableError
from conveyor.step_operators.base import BaseStepOperator

if TYPE_CHECKING:
    from conveyor.container_registries.base import BaseContainerRegistry
    from conveyor.images.build import ImagePlan, StepContainer
    from conveyor.images.registry_api import PushTarget
    from conveyor.images.settings import DockerSettings
    from conveyor.step_operators.info import StepRunInfo, Submission

__all__ = ["PLAIN_ENV", "STORE_PACKAGES", "ContainerStepOperator", "split_environment", "store_requirements"]

#: environment a container job may show in its definition: identifiers and tuning, never credentials. Everything
#: else the launcher hands over (secret variables, artifact store credentials, storage options) goes through the
#: backend's secret mechanism. A flavor whose backend needs more in plain sight extends it (`plain_environment`).
PLAIN_ENV = frozenset({"CONVEYOR_RUN_ID", "CONVEYOR_STEP_RUN_ID", "CONVEYOR_STEP_NAME", "CONVEYOR_CODE_CACHE",
                       "OMP_NUM_THREADS", "PYTHONUNBUFFERED"})
#: the fsspec implementation each remote artifact store protocol needs inside the image
STORE_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "abfs": "adlfs", "az": "adlfs"}


def store_requirements(store_root: str | None) -> list[str]:
    """The package the step's image needs to reach the artifact store at `store_root`: none for a local one."""
    if not store_root or "://" not in store_root:
        return []
    package = STORE_PACKAGES.get(store_root.split("://", 1)[0])
    return [package] if package else []


def split_environment(environment: dict[str, str],
                      plain: frozenset[str] = PLAIN_ENV) -> tuple[dict[str, str], dict[str, str]]:
    """(plain, secret): only known identifiers stay plain; anything else travels through the secret mechanism."""
    return ({k: v for k, v in environment.items() if k in plain},
            {k: v for k, v in environment.items() if k not in plain})


class ContainerStepOperator(BaseStepOperator):
    """A step operator that runs the step in a container image; subclasses describe the job to their backend.

    The image a step runs in, in this order: the step's own (`image` in the flavor's per-step settings), the
    operator's `image` when the step has no "docker" settings, the "docker" settings' prebuilt `image`, else one
    built from them (the operator's `docker_settings` under the pipeline's and step's, field by field) and tagged by
    content hash. The config fields read here (`image`, `docker_settings`, `docker_host`, `build_network_mode`)
    are optional: a flavor declares those its users may set.
    """

    _abstract: ClassVar[bool] = True  # a middle floor: its flavors implement submit()
    streams_logs: ClassVar[bool] = True
    stores_logs: ClassVar[bool] = False
    #: the job shares no filesystem with us but the artifact store: the code travels as a content-hashed archive
    needs_code_archive: ClassVar[bool] = True
    #: variables every container flavor's job definition may show
    plain_environment: ClassVar[frozenset[str]] = PLAIN_ENV
    #: more that this backend's job definition may show (settings its container reads before the step starts)
    extra_plain_environment: ClassVar[frozenset[str]] = frozenset()
    #: what the built image needs beside conveyor and the artifact store's package (e.g. a bootstrap's SDK)
    image_requirements: ClassVar[tuple[str, ...]] = ()
    #: the backend pulls the image from a registry: a built image is pushed to the stack's container registry, and
    #: a stack without one is refused before the run (False: the docker flavor, whose engine built the image)
    pulls_from_registry: ClassVar[bool] = True
    #: the end of "the <flavor> step operator ..." when a step has no image: what to give, and where
    missing_image_advice: ClassVar[str] = (
        "needs an image with conveyor installed: give the operator an image (conveyor step-operator update NAME "
        "--image=...), or the step settings={'docker': {'image': ...}} (prebuilt) or {'docker': {'parent_image': "
        "...}} (built, and pushed to the stack's container registry)")

    def _config_value(self, name: str) -> Any:
        return getattr(self.config, name, None)

    def use_registry(self, registry: Callable[[], BaseContainerRegistry | None], stack_name: str) -> None:
        """How to get the stack's container registry (None: it has none), told by the stack that built this
        operator; called only when an image is pushed, so its login is resolved only then."""
        self.__dict__["_container_registry"] = registry
        self.__dict__["_stack_name"] = stack_name

    @property
    def container_registry(self) -> BaseContainerRegistry | None:
        """Where built images are pushed: the stack's registry, for a flavor whose backend pulls."""
        get = self.__dict__.get("_container_registry")
        return get() if get is not None and self.pulls_from_registry else None

    def push_target(self, plan: ImagePlan) -> PushTarget | None:
        """`<registry uri>/<repository>:<content hash>` for a built image, None without a registry."""
        registry = self.container_registry
        if registry is None:
            return None
        from conveyor.images.registry_api import PushTarget

        name = plan.repository.rsplit("/", 1)[-1]
        return PushTarget(registry.host, f"{registry.namespace}/{name}".strip("/"), plan.tag.rsplit(":", 1)[1],
                          registry.login(), registry.insecure)

    def _refuse_without_registry(self, info: StepRunInfo) -> None:
        if self.pulls_from_registry and self.container_registry is None:
            from conveyor.exceptions import StackError

            stack = self.__dict__.get("_stack_name") or "STACK"
            raise StackError(
                f"step {info.pipeline_step_name!r}: the {self.flavor} step operator {self.name!r} runs a built image "
                f"that its backend pulls from a registry, and stack {stack!r} has no container registry. Add one: "
                f"`conveyor container-registry register images --flavor=default --uri=HOST[:PORT]/NAMESPACE && "
                f"conveyor stack update {stack} -c images` (or give the step a prebuilt image)")

    # -- the image --------------------------------------------------------------------------------
    def docker_settings(self, info: StepRunInfo) -> DockerSettings | None:
        """The operator's image defaults under the pipeline's and step's "docker" settings, field by field; None
        when neither gives any."""
        from conveyor.images.settings import DockerSettings

        step = info.config.settings.get("docker")
        defaults: DockerSettings | None = self._config_value("docker_settings")
        if step is None and defaults is None:
            return None
        base = defaults.model_dump(exclude_unset=True) if defaults is not None else {}
        given = step.model_dump(exclude_unset=True) if isinstance(step, DockerSettings) else dict(step or {})
        return DockerSettings.model_validate({**base, **given})

    def runs_in_image(self, info: StepRunInfo) -> bool:
        """False where the backend provides the environment instead (a registered Azure ML environment)."""
        return True

    def _chosen_image(self, info: StepRunInfo) -> tuple[str | None, DockerSettings | None]:
        """(the image to use as is, or None and the settings to build from); raises when there is neither."""
        own = getattr(info.config.operator_settings, "image", None)
        if own:
            return own, None
        default = self._config_value("image")
        if default and info.config.settings.get("docker") is None:
            return default, None
        docker = self.docker_settings(info)
        if docker is None:
            raise ResourceUnavailableError(
                f"step {info.pipeline_step_name!r}: the {self.flavor} step operator {self.missing_image_advice}")
        return docker.image, (None if docker.image else docker)

    def check_image(self, info: StepRunInfo) -> None:
        """Refuse a step that has no image before anything runs (touches no engine, hashes nothing)."""
        if self.runs_in_image(info):
            self._chosen_image(info)

    def image_plan(self, info: StepRunInfo, *, store_root: str | None = None,
                   code_root: str | None = None) -> ImagePlan | None:
        """What would be built for the step (Dockerfile, requirements, tag); None when it uses an image as is."""
        from conveyor.images.build import artifact_store_root, plan_image

        _, docker = self._chosen_image(info)
        if docker is None:
            return None
        root = store_root if store_root is not None else artifact_store_root(info)
        return plan_image(docker, code_root=code_root if docker.bake_code else None,
                          extra_requirements=[*store_requirements(root), *self.image_requirements])

    def build_image(self, info: StepRunInfo, *, store_root: str | None = None, code_root: str | None = None,
                    log: Callable[[str], None] | None = None) -> tuple[str, bool] | None:
        """(image reference, whether it was built or pushed now); None when the step runs in no image (`conveyor
        build`). With a container registry the reference is the pushed image by digest (`repository@sha256:...`):
        when the registry has the content tag already, one manifest request and no engine."""
        if not self.runs_in_image(info):
            return None
        return self._image_of(info, self.image_plan(info, store_root=store_root, code_root=code_root), log)

    def _image_of(self, info: StepRunInfo, plan: ImagePlan | None,
                  log: Callable[[str], None] | None) -> tuple[str, bool]:
        if plan is None:
            image, _ = self._chosen_image(info)
            return str(image), False
        from conveyor.images.build import build_plan

        docker_host, network = self._config_value("docker_host"), self._config_value("build_network_mode")
        target = self.push_target(plan)
        if target is None:
            return build_plan(plan, docker_host, network_mode=network, log=log)
        from conveyor.images.build import docker_client
        from conveyor.images.registry_api import ensure_pushed

        def build() -> tuple[Any, str]:
            client = docker_client(docker_host)
            return client, build_plan(plan, docker_host, network_mode=network, log=log, client=client)[0]

        return ensure_pushed(target, build, log)

    def step_image(self, info: StepRunInfo, *, store_root: str | None = None, code_root: str | None = None,
                   build: bool = True) -> str:
        """The image reference the step runs in. `build=False` (dry runs) names the tag a build would get,
        touching no engine."""
        if not build:
            plan = self.image_plan(info, store_root=store_root, code_root=code_root)
            if plan is None:
                return str(self._chosen_image(info)[0])
            registry = self.container_registry
            return f"{registry.repository(plan.repository)}:{plan.tag.rsplit(':', 1)[1]}" if registry else plan.tag
        built = self.build_image(info, store_root=store_root, code_root=code_root)
        if built is None:
            raise ValueError(f"step {info.pipeline_step_name!r} runs in no image on the {self.flavor} step operator")
        return built[0]

    def prepare_step(self, info: StepRunInfo, *, store_root: str | None = None, code_root: str | None = None,
                     log: Callable[[str], None] | None = None) -> None:
        """Build the step's image before the run starts (pre-flight), so a broken build leaves no run behind, and
        push it to the stack's container registry; an unchanged spec is reused (the registry has its tag: nothing
        is built or pushed). A built image with no registry to push it to is refused here, naming the fix."""
        if not self.runs_in_image(info):
            return
        plan = self.image_plan(info, store_root=store_root, code_root=code_root)
        if plan is not None:
            self._refuse_without_registry(info)
        self._image_of(info, plan, log)

    def job_code_root(self, info: StepRunInfo) -> str | None:
        """The step's code root, read back from its job spec: only an image that bakes the code needs it."""
        from conveyor.artifacts.store import ArtifactStore

        try:
            store = ArtifactStore(info.job_uri.rsplit("/", 1)[0], None)
            return (json.loads(store.read_text(info.job_uri)).get("source") or {}).get("code_root")
        except Exception:  # noqa: BLE001 - without it, bake_code reports the missing root
            return None

    def submit_image(self, info: StepRunInfo) -> str:
        """The image at submission: the one `prepare_step` built (the same content hash, baked code included)."""
        docker = self.docker_settings(info)
        code_root = self.job_code_root(info) if docker is not None and docker.bake_code else None
        image = self.step_image(info, code_root=code_root)
        self.__dict__.setdefault("_submitted_images", {})[info.job_name] = image  # for attempt_details
        return image

    def attempt_details(self, submission: Submission) -> dict[str, Any]:
        """The image the step ran in: its digest or image id where the backend gave one (`image_digest` in the
        receipt), else the reference submitted (built images are tagged by their content hash)."""
        image = (submission.data.get("image_digest") or self.__dict__.get("_submitted_images", {}).pop(
            submission.job_name, None) or submission.data.get("image"))
        if isinstance(image, str) and "@" in image:
            image = image.rsplit("@", 1)[1]  # repository@sha256:...: the digest
        return {"image_digest": image} if image else {}

    # -- what runs in it --------------------------------------------------------------------------
    def step_container(self, info: StepRunInfo, entrypoint_command: list[str],
                       environment: dict[str, str]) -> StepContainer:
        """The command, environment and working directory of the step's container."""
        from conveyor.images.build import step_container

        return step_container(entrypoint_command, environment, self.docker_settings(info))

    def plain_names(self) -> frozenset[str]:
        """The variables this backend's job definition may show; every other one goes through its secrets."""
        return self.plain_environment | self.extra_plain_environment

    def split_environment(self, environment: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """(plain, secret) for this backend: `plain_names()` in sight, the rest through its secret mechanism."""
        return split_environment(environment, self.plain_names())

    @staticmethod
    def local_store_root(info: StepRunInfo) -> str | None:
        """The local artifact store's directory, which the job cannot see unless mounted; None for a remote store
        (or a pre-flight check, which has no attempt folder yet)."""
        from conveyor.images.build import local_artifact_store_root

        return local_artifact_store_root(info)

