"""What only the Modal flavor does (the golden Sandbox spec is in conformance/).

No Modal is reachable from here. The operator calls the `modal` module's API (`App.lookup`, `Image.from_registry`,
`Secret.from_dict`/`from_name`, `Sandbox.create`/`from_id`/`from_name`, `poll`, `terminate`, `stdout`/`stderr`)
through one seam (`ModalStepOperator.sdk_factory`); the tests put a fake of that API there which records every call
and really runs each Sandbox's command on this machine (tests/cloud_fakes.py). Whether the signatures we call exist
in the installed SDK is checked against the real `modal` package.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from cloud_fakes import FakeModal, Script
from cloud_steps import make, nap, remote_sum, uses_secret

from conveyor import pipeline, step
from conveyor.context import get_context
from conveyor.exceptions import ResourceUnavailableError, RunFailedError
from conveyor.execution.launcher import build_step_info, entrypoint_request
from conveyor.execution.run import dry_run
from conveyor.step_operators.info import Submission

IMAGE = "ghcr.io/acme/conveyor-step:1"


@step
def train(n: int = 1) -> int:
    return n


@pytest.fixture
def modal_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeModal]:
    from conveyor.step_operators.modal.operator import ModalStepOperator

    fake = FakeModal(tmp_path / "modal")
    monkeypatch.setattr(ModalStepOperator, "sdk_factory", lambda: fake)
    yield fake
    fake.close()


def _operator(**config: Any) -> None:
    from testkit import add_step_operator

    add_step_operator("mdl", "modal", **{"image": IMAGE, "poll_interval": 0.1, **config})


def _render(settings: dict[str, Any] | None = None, timeout: Any = None, extra_env: dict[str, str] | None = None,
            **config: Any) -> dict[str, Any]:
    _operator(**config)
    options: dict[str, Any] = {"step_operator": "mdl", "settings": settings or {}}
    if timeout is not None:
        options["timeout"] = timeout

    @pipeline(enable_cache=False)
    def p():
        train.with_options(**options)()

    snapshot = p.compile()
    if not extra_env:
        return dry_run(snapshot, "train")["sandbox"]
    stack = get_context().load_stack()
    operator = stack.step_operator("mdl")
    info = build_step_info(stack, snapshot, "train", operator, run_id="r" * 32, run_name="run-1",
                           step_run_id="0123456789abcdef" * 2, attempt=1,
                           attempt_uri="s3://bucket/runs/x/steps/train/attempt-1")
    command, environment = entrypoint_request(info, stack.artifact_store)
    return operator.dry_run(info, command, {**environment, **extra_env})["sandbox"]


# -- the request ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("resources", "settings", "config", "expected"), [
    ({}, {}, {}, (None, None, None)),
    ({"cpu_count": 2, "memory": "1GiB"}, {}, {}, (None, 2.0, 1024)),
    ({"memory": "1GB"}, {}, {}, (None, None, 954)),  # 10^9 bytes, rounded up to whole MiB
    ({}, {"cpu": 4, "memory": 16384}, {}, (None, 4.0, 16384)),
    ({"cpu_count": 1}, {"cpu": 4}, {"cpu": 8}, (None, 1.0, None)),  # ResourceSettings win
    ({"gpu_count": 1}, {}, {}, ("any", None, None)),
    ({"gpu_count": 2}, {}, {"gpu": "A100"}, ("A100:2", None, None)),
    ({"gpu_count": 8}, {"gpu": "H100"}, {"gpu": "T4"}, ("H100:8", None, None)),
    ({}, {"gpu": "L4"}, {}, ("L4", None, None)),
    ({}, {"gpu": "A100-80GB:4"}, {}, ("A100-80GB:4", None, None)),
    ({}, {}, {"gpu": "T4"}, (None, None, None)),  # a configured type alone asks for no GPU
])
def test_resource_settings_become_cpu_memory_and_gpu(resources: dict[str, Any], settings: dict[str, Any],
                                                     config: dict[str, Any], expected: tuple[Any, ...]) -> None:
    spec = _render({"resources": resources, "step_operator.modal": settings}, **config)
    assert (spec.get("gpu"), spec.get("cpu"), spec.get("memory")) == expected


@pytest.mark.parametrize(("resources", "settings", "match"), [
    ({"gpu_count": 9}, {}, "at most 8"),
    ({"cpu_count": 4096}, {}, "cpu_count=4096"),
    ({"memory": "400GiB"}, {}, "at most 344064 MiB"),
    ({"gpu_count": 2}, {"gpu": "A100:4"}, "disagrees"),
])
def test_impossible_requests_are_refused_before_anything_is_recorded(
        modal_fake: FakeModal, resources: dict[str, Any], settings: dict[str, Any], match: str) -> None:
    _operator()

    @pipeline(enable_cache=False)
    def p():
        train.with_options(step_operator="mdl",
                           settings={"resources": resources, "step_operator.modal": settings})()

    with pytest.raises(ResourceUnavailableError, match=match):
        p()
    from conveyor import Client

    assert Client().list_pipeline_runs() == [] and modal_fake.received == []


def test_the_sandbox_spec() -> None:
    spec = _render({"resources": {"cpu_count": 1.5}, "step_operator.modal": {"region": "us-east",
                                                                           "secrets": ["hf-token"]}},
                   timeout="10m", secrets=["wandb"], cloud="aws", registry_secret="ghcr", app_name="ml-steps")
    assert spec["app"] == "ml-steps" and spec["name"] == "conveyor-dry-run-train-1"
    assert spec["args"][:3] == ["python3", "-m", "conveyor.entrypoints.step_operator"]
    assert spec["image"] == {"from_registry": IMAGE, "secret": "ghcr"}
    assert spec["secrets"] == {"from_dict": [], "from_name": ["wandb", "hf-token"]}
    assert spec["timeout"] == 660 and spec["region"] == "us-east" and spec["cloud"] == "aws"
    assert spec["env"]["OMP_NUM_THREADS"] == "2" and spec["cpu"] == 1.5
    assert spec["tags"]["conveyor.step_run_id"] == "dry-run-train"


def test_a_step_without_a_timeout_gets_the_configured_lifetime_not_modals_300s() -> None:
    assert _render()["timeout"] == 24 * 3600
    assert _render({"step_operator.modal": {"timeout": 7200}})["timeout"] == 7200


def test_secret_variables_go_in_a_secret_from_dict_never_in_the_sandbox_definition() -> None:
    value = f"planted-{uuid.uuid4().hex}"
    spec = _render(extra_env={"WANDB_API_KEY": value, "AWS_SECRET_ACCESS_KEY": "aws-" + value})
    assert value not in json.dumps(spec)
    assert spec["secrets"]["from_dict"] == ["AWS_SECRET_ACCESS_KEY", "WANDB_API_KEY"]
    assert "WANDB_API_KEY" not in spec["env"]


def test_config_rejects_bad_gpu_strings_timeouts_and_typos() -> None:
    from pydantic import ValidationError

    from conveyor.step_operators.modal.flavor import ModalStepOperatorConfig, ModalStepOperatorSettings

    with pytest.raises(ValidationError, match="GPU type"):
        ModalStepOperatorSettings(gpu="A100:two")
    with pytest.raises(ValidationError):
        ModalStepOperatorConfig(timeout=100_000)
    with pytest.raises(ValidationError, match="extra"):
        ModalStepOperatorConfig(gpus="A100")


def test_the_calls_we_make_exist_in_the_installed_modal_sdk() -> None:
    """The fake mirrors these signatures; a renamed or removed parameter in a new SDK fails here."""
    import modal

    create = inspect.signature(modal.Sandbox.create)
    for name in ("app", "name", "tags", "image", "env", "secrets", "timeout", "gpu", "cpu", "memory", "region",
                 "cloud", "workdir", "client", "environment_name"):
        assert name in create.parameters, name
    assert {"app_name", "name", "environment_name", "client"} <= set(inspect.signature(modal.Sandbox.from_name).parameters)
    assert {"sandbox_id", "client"} <= set(inspect.signature(modal.Sandbox.from_id).parameters)
    assert {"name", "create_if_missing", "environment_name", "client"} <= set(inspect.signature(modal.App.lookup).parameters)
    assert "env_dict" in inspect.signature(modal.Secret.from_dict).parameters
    assert {"tag", "secret"} <= set(inspect.signature(modal.Image.from_registry).parameters)
    for method in ("poll", "terminate", "get_tags"):
        assert callable(getattr(modal.Sandbox, method)), method
    assert {"stdout", "stderr", "object_id"} <= set(dir(modal.Sandbox))
    from modal_proto import api_pb2

    from conveyor.step_operators.modal import operator as op

    status = api_pb2.GenericResult
    assert (op.TERMINATED, op.TIMEOUT, op.INIT_FAILURE, op.INTERNAL_FAILURE) == (
        status.GENERIC_STATUS_TERMINATED, status.GENERIC_STATUS_TIMEOUT, status.GENERIC_STATUS_INIT_FAILURE,
        status.GENERIC_STATUS_INTERNAL_FAILURE)
    assert op.MEMORY_STATUSES == {status.GENERIC_STATUS_MEMORY_MANAGER_EVICTION,
                                  status.GENERIC_STATUS_MEMORY_THRASHING_EVICTION, status.GENERIC_STATUS_KERNEL_OOM_KILL}


# -- the lifecycle, through the fake ----------------------------------------------------------------
def test_a_pipeline_runs_in_a_sandbox_and_streams_its_logs(modal_fake: FakeModal) -> None:
    _operator(token_id="ak-1", token_secret="as-1")

    @pipeline(enable_cache=False)
    def p():
        remote_sum.with_options(step_operator="mdl", settings={"resources": {"cpu_count": 2, "memory": "2GiB"}})(make(5))

    run = p()
    step_run = run.steps["remote_sum"]
    assert step_run.status == "completed" and step_run.outputs["output"].load() == 10
    assert "summing 5 values" in step_run.logs()
    sent = modal_fake.received[0]
    assert sent["cpu"] == 2.0 and sent["memory"] == 2048 and sent["name"] == step_run.submission["job_name"]
    assert step_run.submission["backend_id"] in modal_fake.sandboxes
    assert modal_fake.clients == [("ak-1", "as-1")]


def test_a_secret_reaches_the_step_through_a_modal_secret_only(modal_fake: FakeModal) -> None:
    _operator()
    value = f"planted-{uuid.uuid4().hex}"
    get_context().vault.set("planted", {"token": value}, replace=False)

    @pipeline(enable_cache=False)
    def p():
        uses_secret.with_options(step_operator="mdl",
                                 settings={"environment": {"PLANTED": "{{planted.token}}"}})("PLANTED")

    run = p()
    step_run = run.steps["uses_secret"]
    assert step_run.outputs["output"].load() == hashlib.sha256(value.encode()).hexdigest()
    assert "the token is ****" in step_run.logs()
    assert value not in json.dumps(modal_fake.received)
    assert any(d.get("PLANTED") == value for d in modal_fake.secret_values)


@pytest.mark.parametrize(("fate", "kind", "text"), [("oom", "memory", "killed for memory"),
                                                      ("timeout", "timeout", "timed out")])
def test_platform_kills_become_failure_kinds(modal_fake: FakeModal, fate: str, kind: str, text: str) -> None:
    _operator()
    modal_fake.scripts.append(Script(fate=fate, after_s=0.5))

    @pipeline(enable_cache=False)
    def p():
        nap.with_options(step_operator="mdl")(30)

    with pytest.raises(RunFailedError) as failed:
        p()
    step_run = failed.value.run.steps["nap"]
    assert step_run.failure_kind == kind and text in step_run.error


def test_an_infrastructure_failure_is_retried_as_a_new_sandbox(modal_fake: FakeModal) -> None:
    _operator()
    modal_fake.scripts.append(Script(fate="preempted", after_s=0.5))

    @pipeline(enable_cache=False)
    def p():
        nap.with_options(step_operator="mdl")(1.0)

    run = p()
    assert run.steps["nap"].status == "completed" and run.steps["nap"].attempt == 2
    assert [s["name"].rsplit("-", 1)[1] for s in modal_fake.received] == ["1", "2"]


def test_a_step_timeout_terminates_the_sandbox(modal_fake: FakeModal) -> None:
    _operator()

    @pipeline(enable_cache=False)
    def p():
        nap.with_options(step_operator="mdl", timeout=1)(300)

    with pytest.raises(RunFailedError) as failed:
        p()
    assert failed.value.run.steps["nap"].failure_kind == "timeout"
    (sandbox,) = modal_fake.sandboxes.values()
    assert modal_fake.terminations == [sandbox.object_id] and not sandbox.local.alive()


def _info() -> tuple[Any, Any, list[str], dict[str, str]]:
    stack = get_context().load_stack()
    operator = stack.step_operator("mdl")

    @pipeline(enable_cache=False)
    def p():
        nap.with_options(step_operator="mdl")(300)

    snapshot = p.compile()
    root = stack.artifact_store.artifact_store()
    info = build_step_info(stack, snapshot, "nap", operator, run_id="r1", run_name="r1", step_run_id="cd" * 16,
                           attempt=1, attempt_uri=root.join("runs", "r1", "steps", "nap", "attempt-1"))
    command, environment = entrypoint_request(info, stack.artifact_store)
    return operator, info, command, environment


def test_resubmitting_reattaches_by_name_and_a_receipt_is_enough_to_follow_and_cancel(modal_fake: FakeModal) -> None:
    _operator()
    operator, info, command, environment = _info()
    first = operator.submit(info, command, environment)
    fresh = type(operator)(name=operator.name, id=operator.id, config=operator.config, flavor=operator.flavor)
    second = fresh.submit(info, command, environment)
    assert second.data["reattached"] is True and second.backend_id == first.backend_id
    assert len(modal_fake.received) == 1
    receipt = Submission.from_json(json.loads(json.dumps(second.to_json())))
    other = type(operator)(name=operator.name, id=operator.id, config=operator.config, flavor=operator.flavor)
    assert other.get_status(receipt).state == "running"
    other.cancel(receipt)
    assert other.get_status(receipt).state == "cancelled"
    other.cancel(receipt)  # idempotent
    assert modal_fake.terminations == [first.backend_id]


def test_a_sandbox_of_the_same_name_that_is_not_this_steps_is_never_followed(modal_fake: FakeModal) -> None:
    _operator()
    operator, info, command, environment = _info()
    first = operator.submit(info, command, environment)
    modal_fake.sandboxes[first.backend_id].spec["tags"]["conveyor.step_run_id"] = "someone-else"
    with pytest.raises(RuntimeError, match="not this step's"):
        operator.submit(info, command, environment)
    operator.cancel(first)


def test_a_sandbox_modal_forgot_is_lost(modal_fake: FakeModal) -> None:
    _operator()
    operator = get_context().load_stack().step_operator("mdl")
    gone = Submission("modal", "conveyor-x-1", backend_id="sb-gone", data={"sandbox_id": "sb-gone"})
    assert operator.get_status(gone).state == "lost"
    assert list(operator.logs(gone, follow=True)) == []


def test_importing_the_flavor_loads_no_modal_sdk() -> None:
    import subprocess
    import sys

    code = ("import sys; import conveyor.step_operators.modal.flavor; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('modal', 'modal_proto', 'grpclib')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
