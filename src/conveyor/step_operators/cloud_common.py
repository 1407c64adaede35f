"""Helpers shared by the managed-cloud container flavors (azureml, modal): the step's image and which variables
may travel in plain sight.

Pure Python and pydantic only: safe to import from a flavor's light `flavor.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.exceptions import ResourceUnavailableError

if TYPE_CHECKING:
    from conveyor.images.settings import DockerSettings
    from conveyor.step_operators.info import StepRunInfo

#: environment a cloud job may show in its definition: identifiers and tuning, never credentials. Everything
#: else the launcher hands over (secret variables, artifact store credentials, storage options) goes through the
#: backend's secret mechanism.
PLAIN_ENV = frozenset({"CONVEYOR_RUN_ID", "CONVEYOR_STEP_RUN_ID", "CONVEYOR_STEP_NAME", "CONVEYOR_CODE_CACHE",
                       "OMP_NUM_THREADS", "PYTHONUNBUFFERED"})


def split_environment(environment: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(plain, secret): only known identifiers stay plain; anything else travels through the secret mechanism."""
    plain = {k: v for k, v in environment.items() if k in PLAIN_ENV}
    secret = {k: v for k, v in environment.items() if k not in PLAIN_ENV}
    return plain, secret


def docker_settings(info: "StepRunInfo") -> "DockerSettings | None":
    """The step's (and pipeline's) "docker" settings, or None when it has none."""
    from conveyor.images.settings import DockerSettings

    raw = info.config.settings.get("docker")
    if raw is None:
        return None
    return raw if isinstance(raw, DockerSettings) else DockerSettings.model_validate(raw)


def step_image(info: "StepRunInfo", *, flavor: str, own: str | None, default: str | None, docker_host: str | None,
               network_mode: str | None, extra_requirements: list[str], store_root: str | None = None,
               code_root: str | None = None, build: bool = True) -> str:
    """The image a step runs in: its own setting, the "docker" settings' image (prebuilt, or built by content
    hash through `conveyor.images`), or the operator's default. `build=False` (dry runs) names the tag a build
    would get, touching no engine."""
    if own:
        return own
    docker = docker_settings(info)
    if docker is None:
        if default:
            return default
        raise ResourceUnavailableError(
            f"step {info.pipeline_step_name!r}: the {flavor} step operator needs an image with conveyor installed: "
            f"give the operator an image (conveyor step-operator update NAME --image=...), or the step "
            "settings={'docker': {'image': ...}} (prebuilt) or {'docker': {'parent_image': ...}} (built and pushed "
            "to DockerSettings.target_repository)")
    if docker.image:
        return docker.image
    from conveyor.images.build import artifact_store_root, build_plan, plan_image
    from conveyor.step_operators.docker.operator import store_requirements

    root = store_root if store_root is not None else artifact_store_root(info)
    plan = plan_image(docker, code_root=code_root if docker.bake_code else None,
                      extra_requirements=[*store_requirements(root), *extra_requirements])
    if not build:
        return plan.tag
    return build_plan(plan, docker_host, network_mode=network_mode)[0]
