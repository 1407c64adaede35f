"""The docker step operator on a real engine (rootful Podman's API socket): what the conformance suite does not show."""

from __future__ import annotations

from pathlib import Path

import pytest
from docker_steps import consume, cpu_quota, produce, whoami

from conveyor import Client, pipeline
from conveyor.exceptions import ResourceUnavailableError


@pytest.fixture
def boxed(podman_engine, podman_step_image, step_operator, tmp_path: Path):
    """A docker step operator named "boxed" whose steps run in the session's step image."""
    def register(**extra):
        config = {"docker_host": podman_engine.docker_host, "network_mode": "none", "ulimits": podman_engine.ulimits,
                  "docker_settings": {"parent_image": podman_engine.base_image}, "poll_interval": 0.2, **extra}
        step_operator("boxed", "docker", **config)
        return podman_engine
    return register


def test_outputs_flow_from_one_container_step_to_the_next(boxed) -> None:
    engine = boxed()

    @pipeline(enable_cache=False)
    def p():
        consume.with_options(step_operator="boxed")(produce.with_options(step_operator="boxed")(5))

    run = p()
    made = run.steps["produce"].outputs["output"].load()
    assert made["in_container"] is True and made["values"] == [0, 1, 2, 3, 4]
    assert run.steps["consume"].outputs["output"].load() == 10
    assert "producing 5 in a container" in run.steps["produce"].logs()
    for name in ("produce", "consume"):
        step_run = run.steps[name]
        assert step_run.submission["data"]["image"].startswith("localhost/conveyor-step:")
        assert engine.containers(all=True, label=f"conveyor.step_run_id={step_run.id}") == []


def test_a_fractional_cpu_count_becomes_a_cpu_quota_inside(boxed) -> None:
    boxed()

    @pipeline(enable_cache=False)
    def p():
        cpu_quota.with_options(step_operator="boxed", settings={"resources": {"cpu_count": 0.5}})()

    assert p().steps["cpu_quota"].outputs["output"].load() == 0.5


def test_a_gpu_request_is_refused_clearly_before_anything_runs(boxed) -> None:
    boxed()

    @pipeline(enable_cache=False)
    def p():
        whoami.with_options(step_operator="boxed", settings={"resources": {"gpu_count": 1}})()

    with pytest.raises(ResourceUnavailableError) as info:
        p()
    message = str(info.value)
    assert "gpu_count=1" in message and "Podman" in message and "ignores device requests" in message
    assert Client().list_pipeline_runs() == []


def test_keep_container_leaves_the_finished_container_to_inspect(boxed) -> None:
    engine = boxed(keep_container=True)

    @pipeline(enable_cache=False)
    def p():
        whoami.with_options(step_operator="boxed")()

    step_run = p().steps["whoami"]
    assert step_run.outputs["output"].load() == "whoami"
    kept = engine.containers(all=True, label=f"conveyor.step_run_id={step_run.id}")
    try:
        assert [c.name for c in kept] == [step_run.submission["job_name"]]
        assert kept[0].attrs["State"]["ExitCode"] == 0
        assert kept[0].attrs["HostConfig"]["Init"] is True
    finally:
        for container in kept:
            container.remove(force=True)


def test_a_broken_image_build_fails_before_the_run_is_recorded(boxed) -> None:
    boxed()

    @pipeline(enable_cache=False)
    def p():
        whoami.with_options(step_operator="boxed", settings={"docker": {"requirements": ["no-such-package-xyz==0"]}})()

    with pytest.raises(Exception, match="no-such-package-xyz"):
        p()
    assert Client().list_pipeline_runs() == []
