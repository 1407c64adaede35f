"""The middle floor of the container flavors (`step_operators/container.py`): docker, kubernetes, sagemaker, vertex,
azureml and modal resolve the step's image, the artifact store's package and the plain environment in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conveyor import pipeline, step
from conveyor.context import get_context
from conveyor.execution.launcher import build_step_info
from conveyor.step_operators.container import PLAIN_ENV, ContainerStepOperator, store_requirements

ROLE = "arn:aws:iam::123456789012:role/conveyor-steps"
#: the least config each flavor takes (no image: the step's "docker" settings build one)
CONFIGS: dict[str, dict[str, Any]] = {
    "docker": {},
    "kubernetes": {"check_node_resources": False},
    "sagemaker": {"role": ROLE, "region": "eu-west-1", "bucket": "conveyor-ml"},
    "vertex": {"project": "ml-project"},
    "azureml": {"subscription_id": "00000000-0000-0000-0000-000000000000", "resource_group": "ml",
                "workspace_name": "ws", "key_vault_url": "https://kv.vault.azure.net"},
    "modal": {},
}
BUILT = {"docker": {"parent_image": "python:3.11-slim"}}


@step
def train() -> int:
    return 1


def _info(flavor: str, *, attempt_uri: str = "", settings: dict[str, Any] | None = None,
          **config: Any) -> tuple[ContainerStepOperator, Any]:
    from testkit import add_step_operator

    add_step_operator(flavor, flavor, **{**CONFIGS[flavor], **config})

    @pipeline(enable_cache=False)
    def p():
        train.with_options(step_operator=flavor, settings=settings if settings is not None else BUILT)()

    stack = get_context().load_stack()
    operator = stack.step_operator(flavor)
    info = build_step_info(stack, p.compile(), "train", operator, run_id="r", run_name="r", step_run_id="s" * 16,
                           attempt=1, attempt_uri=attempt_uri)
    return operator, info


def _requirements(operator: ContainerStepOperator, info: Any, **kwargs: Any) -> set[str]:
    """The package names the step's built image installs beside its own requirements."""
    import re

    plan = operator.image_plan(info, **kwargs)
    assert plan is not None
    lines = plan.files[".conveyor/conveyor-requirements.txt"].decode().split()
    return {re.split(r"[=<>\[]", line, maxsplit=1)[0].lower() for line in lines}


@pytest.mark.parametrize(("root", "expected"), [
    ("s3://bucket/prefix", ["s3fs"]), ("s3a://bucket", ["s3fs"]), ("gs://bucket/prefix", ["gcsfs"]),
    ("gcs://bucket", ["gcsfs"]), ("abfs://container/prefix", ["adlfs"]), ("az://container", ["adlfs"]),
    ("/srv/store", []), ("file:///srv/store", []), ("", []), (None, []),
])
def test_the_store_package_follows_the_artifact_store_protocol(root: str | None, expected: list[str]) -> None:
    assert store_requirements(root) == expected


@pytest.mark.parametrize("flavor", sorted(CONFIGS))
def test_every_container_flavor_installs_the_package_of_its_artifact_store(flavor: str) -> None:
    """Kubernetes and SageMaker used to install s3fs for an s3:// store and nothing for any other one."""
    operator, info = _info(flavor, attempt_uri="gs://bucket/root/runs/r/steps/train/attempt-1")
    assert isinstance(operator, ContainerStepOperator) and operator.needs_code_archive
    at_submission = _requirements(operator, info)  # the store's root read from the attempt folder
    assert "gcsfs" in at_submission and "s3fs" not in at_submission, at_submission
    preflight = _requirements(operator, info, store_root="abfs://container/root")  # as `prepare_step` is told
    assert "adlfs" in preflight and not {"gcsfs", "s3fs"} & preflight, preflight
    assert not {"adlfs", "gcsfs", "s3fs"} & _requirements(operator, info, store_root="/srv/store")
    assert "s3fs" in _requirements(operator, info, store_root="s3://bucket/root")
    if flavor == "azureml":  # what its bootstrap needs comes on top
        assert {"azure-identity", "azure-keyvault-secrets"} <= preflight


@pytest.mark.parametrize("flavor", ["kubernetes", "sagemaker", "vertex"])
def test_a_step_that_bakes_its_code_passes_the_checks_before_the_run(flavor: str) -> None:
    """The checks before a run only ask whether there is an image: they no longer plan one without the code root
    (which failed every step with bake_code before its image could be built with the code)."""
    operator, info = _info(flavor, settings={"docker": {**BUILT["docker"], "bake_code": True}})
    operator.check_resources(info)
    assert operator.image_plan(info, code_root=str(Path(__file__).parent / "zenml_project")) is not None


def _secret_keys(flavor: str, operator: ContainerStepOperator, out: dict[str, Any]) -> set[str]:
    """The variables a dry run sends through the backend's secret mechanism."""
    if flavor == "kubernetes":
        return {k for m in out["manifests"] if m["kind"] == "Secret" for k in m["data"]}
    if flavor == "vertex":
        return set(out.get("secret", {}).get("payload_keys", []))
    if flavor == "azureml":
        return set(out["key_vault_secrets"])
    if flavor == "modal":
        return set(out["sandbox"]["secrets"]["from_dict"])
    return set(out.get("secret", {}).get("keys", []))  # sagemaker


@pytest.mark.parametrize("flavor", ["kubernetes", "sagemaker", "vertex", "azureml", "modal"])
def test_which_variables_travel_in_plain_sight_is_one_definition(flavor: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Every flavor with a secret mechanism splits by the base's list (the docker flavor has none: a local engine's
    container gets its environment as is)."""
    operator, info = _info(flavor, attempt_uri="s3://bucket/root/runs/r/steps/train/attempt-1",
                           settings={"docker": {"image": "registry.example/step:1"}})
    env = {"CONVEYOR_RUN_ID": "r", "AWS_SECRET_ACCESS_KEY": "very-secret", "TEAM_TOKEN": "tok"}
    secret = _secret_keys(flavor, operator, operator.dry_run(info, ["python", "-m", "m"], dict(env)))
    assert {"AWS_SECRET_ACCESS_KEY", "TEAM_TOKEN"} <= secret and "CONVEYOR_RUN_ID" not in secret, secret

    monkeypatch.setattr(ContainerStepOperator, "plain_environment", PLAIN_ENV | {"TEAM_TOKEN"})
    secret = _secret_keys(flavor, operator, operator.dry_run(info, ["python", "-m", "m"], dict(env)))
    assert "AWS_SECRET_ACCESS_KEY" in secret and "TEAM_TOKEN" not in secret, secret


def test_conveyor_build_goes_through_the_base_for_every_container_flavor(project: Path, conveyor_cli) -> None:
    """`conveyor build` asks each step's operator for its image the same way: a prebuilt one is reported as is, and
    a step in a registered Azure ML environment has none to build."""
    from testkit import add_step_operator

    add_step_operator("k8s", "kubernetes", image="registry.example/conveyor-step:1")
    add_step_operator("aml", "azureml", **CONFIGS["azureml"], environment_name="conveyor-env@latest")
    (project / "two.py").write_text('''
from conveyor import pipeline, step


@step(step_operator="k8s")
def in_a_pod() -> int:
    return 1


@step(step_operator="aml")
def in_an_environment() -> int:
    return 2


@pipeline
def two():
    in_a_pod()
    in_an_environment()
''')
    out = conveyor_cli("build", "two.py:two")
    assert "registry.example/conveyor-step:1  up to date  (steps: in_a_pod)" in out.stdout, out.stdout + out.stderr
    assert "in_an_environment" not in out.stdout, out.stdout
