"""`DockerSettings`: what goes into a step's container image (settings key "docker", pipeline or step level).

A settings model like the others, so it lives in `config` (the bottom layer); `conveyor.images` builds from it."""

from __future__ import annotations

import sys
from typing import Literal

from pydantic import Field, field_validator

from conveyor.config.base import BaseSettings

__all__ = ["DEFAULT_REPOSITORY", "SETTINGS_KEY", "DockerSettings", "default_parent_image"]

SETTINGS_KEY = "docker"
DEFAULT_REPOSITORY = "localhost/conveyor-step"


def default_parent_image() -> str:
    """The official slim Python image of the interpreter running Conveyor, so pickled steps load the same way."""
    return f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"


class DockerSettings(BaseSettings):
    """The image a container-flavor step (docker, kubernetes, ...) runs in.

    Give `image` to use a prebuilt image as is; otherwise Conveyor renders a Dockerfile from these fields, builds
    it, and tags it with the hash of everything that goes into it, so an unchanged spec is never rebuilt. The
    step's code is not baked in by default: it travels as the content-hashed code archive through the artifact
    store, so a code change never forces a build.
    """

    image: str | None = Field(default=None, description=(
        "a prebuilt image to use as is (it must have Python with conveyor and its requirements installed); "
        "nothing is built"))
    parent_image: str | None = Field(default=None, description=(
        "the image to build on; default: python:<this interpreter's major.minor>-slim"))
    dockerfile: str | None = Field(default=None, description=(
        "your own Dockerfile; it is built first and becomes the parent image of the generated one"))
    build_context_root: str | None = Field(default=None, description=(
        "build context of `dockerfile`; default: the Dockerfile's directory"))
    requirements: list[str] | str | None = Field(default=None, description=(
        "pip requirements to install: a list of requirement strings, or the path of a requirements file"))
    apt_packages: list[str] = Field(default_factory=list, description="Debian/Ubuntu packages installed with apt-get")
    environment: dict[str, str] = Field(default_factory=dict, description="environment variables baked into the image")
    install_conveyor: bool = Field(default=True, description=(
        "copy the running Conveyor into the image and pip-install its requirements, pinned to the versions "
        "installed here"))
    bake_code: bool = Field(default=False, description=(
        "copy the step's code into the image instead of shipping it as the code archive (then a code change "
        "rebuilds the image)"))
    pip_source: Literal["host", "index"] = Field(default="host", description=(
        "'host': resolve the requirements here (`pip wheel`, with this machine's index, proxy and certificates) "
        "and install them offline from wheels in the build context (the image's Python must be the same "
        "major.minor as this one); 'index': pip-install from the package index during the build"))
    python: str = Field(default="python3", description="the Python interpreter of the image")
    target_repository: str = Field(default=DEFAULT_REPOSITORY, description=(
        "repository of the built image's tag; the tag is the content hash"))

    @field_validator("apt_packages", "requirements", mode="before")
    @classmethod
    def _no_blank(cls, value: object) -> object:
        if isinstance(value, list):
            return [str(v).strip() for v in value if str(v).strip()]
        return value

    @property
    def needs_build(self) -> bool:
        return self.image is None
