"""Step images: Dockerfile rendering, content-hash tags, and `conveyor build` reusing images on real Podman."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from conveyor.exceptions import ConfigError
from conveyor.images.build import conveyor_requirements, plan_image, step_container
from conveyor.images.settings import DockerSettings


def test_the_dockerfile_installs_requirements_apt_packages_environment_and_conveyor() -> None:
    plan = plan_image(DockerSettings(parent_image="debian:bookworm", requirements=["scikit-learn>=1.4"],
                                     apt_packages=["libgomp1"], environment={"MODE": "a b"}))
    lines = plan.dockerfile.splitlines()
    assert lines[0] == "FROM debian:bookworm"
    assert any(line.startswith("RUN apt-get update") and "libgomp1" in line for line in lines)
    assert 'ENV MODE="a b"' in lines
    assert "COPY .conveyor/lib/ /opt/conveyor/lib/" in lines
    assert plan.files[".conveyor/requirements.txt"] == b"scikit-learn>=1.4\n"
    assert ".conveyor/lib/conveyor/__init__.py" in plan.files
    # Conveyor's own requirements are pinned to what runs here, so both sides behave the same
    assert any(r.startswith("pydantic==") for r in conveyor_requirements())
    # slow-changing layers first: an edit of Conveyor itself rebuilds only the last layers
    assert lines.index("COPY .conveyor/lib/ /opt/conveyor/lib/") > max(
        i for i, line in enumerate(lines) if "pip install" in line)


def test_the_tag_is_a_hash_of_everything_that_goes_in(tmp_path: Path) -> None:
    base = DockerSettings(parent_image="debian:bookworm", requirements=["numpy==2.1.0"])
    same = plan_image(DockerSettings(parent_image="debian:bookworm", requirements=["numpy==2.1.0"]))
    assert plan_image(base).tag == same.tag
    assert plan_image(base).tag.startswith("localhost/conveyor-step:")
    assert plan_image(base.model_copy(update={"requirements": ["numpy==2.1.1"]})).tag != same.tag
    assert plan_image(base.model_copy(update={"parent_image": "debian:trixie"})).tag != same.tag
    assert plan_image(base, extra_requirements=["s3fs"]).tag != same.tag


def test_a_code_change_keeps_the_tag_unless_code_is_baked_in(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "steps.py").write_text("def f():\n    return 1\n")
    settings = DockerSettings(parent_image="debian:bookworm")
    baked = settings.model_copy(update={"bake_code": True})
    before, before_baked = plan_image(settings, code_root=str(code)).tag, plan_image(baked, code_root=str(code)).tag
    (code / "steps.py").write_text("def f():\n    return 2\n")
    assert plan_image(settings, code_root=str(code)).tag == before
    assert plan_image(baked, code_root=str(code)).tag != before_baked


def test_a_requirements_file_is_read_and_hashed(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("# pinned\nrequests==2.32.3\n")
    settings = DockerSettings(parent_image="debian:bookworm", requirements="requirements.txt")
    first = plan_image(settings, base_dir=tmp_path)
    assert first.files[".conveyor/requirements.txt"] == b"requests==2.32.3\n"
    req.write_text("requests==2.32.4\n")
    assert plan_image(settings, base_dir=tmp_path).tag != first.tag


def test_docker_settings_are_strict_and_a_known_settings_key() -> None:
    from conveyor import step

    with pytest.raises(ConfigError, match="parent_imag"):
        step(settings={"docker": {"parent_imag": "x"}})(lambda: 1)
    s = step(settings={"docker": DockerSettings(requirements=["numpy"])})(lambda: 1)
    assert s is not None


def test_the_step_container_gets_the_entrypoint_and_environment_only() -> None:
    container = step_container(["/venv/bin/python", "-m", "conveyor.entrypoints.step_operator", "--job", "j"],
                               {"CONVEYOR_RUN_ID": "r", "AWS_SECRET_ACCESS_KEY": "s"}, DockerSettings(python="python3.12"))
    assert container.command == ["python3.12", "-m", "conveyor.entrypoints.step_operator", "--job", "j"]
    assert container.environment["AWS_SECRET_ACCESS_KEY"] == "s"
    assert set(container.environment) == {"CONVEYOR_RUN_ID", "AWS_SECRET_ACCESS_KEY", "PYTHONUNBUFFERED",
                                          "CONVEYOR_CODE_CACHE"}


PIPELINE = textwrap.dedent('''
    from conveyor import pipeline, step

    @step(step_operator="boxed")
    def shout(word: str = "{word}") -> str:
        return word.upper()

    @pipeline
    def boxed_pipeline():
        shout()
''')


def test_conveyor_build_reuses_the_image_and_a_code_change_does_not_rebuild(project: Path, conveyor_cli,
                                                                             podman_engine, podman_step_image) -> None:
    from testkit import add_step_operator

    add_step_operator("boxed", "docker", docker_host=podman_engine.docker_host,
                      docker_settings={"parent_image": podman_engine.base_image,
                                       "environment": {"CONVEYOR_TEST_NONCE": project.name}})
    (project / "boxed.py").write_text(PIPELINE.format(word="hello"))
    first = conveyor_cli("build", "boxed.py:boxed_pipeline", timeout=600)
    tag = first.stdout.split()[0]
    assert tag.startswith("localhost/conveyor-step:") and " built " in first.stdout, first.stdout
    image_id = podman_engine.client().images.get(tag).id

    second = conveyor_cli("build", "boxed.py:boxed_pipeline")
    assert f"{tag}  up to date" in second.stdout and "All images up to date." in second.stdout, second.stdout

    (project / "boxed.py").write_text(PIPELINE.format(word="changed code"))
    third = conveyor_cli("build", "boxed.py:boxed_pipeline")
    assert f"{tag}  up to date" in third.stdout, third.stdout
    assert podman_engine.client().images.get(tag).id == image_id
    podman_engine.client().images.remove(tag)
