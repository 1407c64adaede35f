"""Render a step image's Dockerfile and build context, tag it with their content hash, build it unless it exists.

Heavy: the docker SDK (Docker Engine API; Podman's compatible socket works too) is imported here, on first build.
Rendering and hashing (`plan_image`) need no engine, so `conveyor build` can say "up to date" cheaply and the
dry run can name the tag.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from conveyor.exceptions import ConveyorError
from conveyor.images.settings import DockerSettings, default_parent_image

if TYPE_CHECKING:
    from conveyor.step_operators.info import StepRunInfo

#: where Conveyor itself, and the step's code when baked, live inside the image
CONVEYOR_LIB = "/opt/conveyor/lib"
CODE_DIR = "/app/code"
WORKDIR = "/app"
#: the code archive is extracted here inside the container (writable whatever the user)
CONTAINER_CODE_CACHE = "/tmp/conveyor/code"
SPEC_HASH_LABEL = "conveyor.spec-hash"
PARENT_REPOSITORY = "localhost/conveyor-parent"
HASH_CHARS = 16
_SKIP_DIRS = frozenset({".git", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".venv", "venv"})
_MAX_CONTEXT_FILES = 20_000


class ImageBuildError(ConveyorError):
    """The engine could not build a step image; the message carries the end of the build log."""


@dataclass
class ImagePlan:
    """Everything that goes into one image: the Dockerfile, the build context's files, and the resulting tag."""

    dockerfile: str
    #: path inside the build context -> file content
    files: dict[str, bytes] = field(default_factory=dict)
    #: a user Dockerfile to build first (its image becomes the parent): (context root, Dockerfile path)
    parent_build: tuple[str, str] | None = None
    parent_tag: str | None = None
    repository: str = ""
    digest: str = ""
    #: requirement files (".conveyor/<name>.txt") whose wheels are gathered on this machine at build time
    wheelhouses: list[str] = field(default_factory=list)

    @property
    def tag(self) -> str:
        return f"{self.repository}:{self.digest[:HASH_CHARS]}"


# -- what goes in ---------------------------------------------------------------------------------------
def _installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return match.group(1) if match else requirement.strip()


def pinned(requirement: str) -> str:
    """`name[extras]` pinned to the version installed here (same behaviour on both sides); as given otherwise."""
    name = _requirement_name(requirement)
    rest = requirement.strip()[len(name):]
    extras = rest[: rest.index("]") + 1] if rest.startswith("[") and "]" in rest else ""
    version = _installed_version(name)
    return f"{name}{extras}=={version}" if version else requirement.strip()


def conveyor_requirements(extra: Iterable[str] = ()) -> list[str]:
    """Conveyor's own runtime requirements (no extras), plus `extra`, each pinned to the installed version."""
    try:
        declared = metadata.requires("conveyor") or []
    except metadata.PackageNotFoundError:
        declared = []
    core = [r.split(";")[0].strip() for r in declared if "extra ==" not in r and "extra==" not in r]
    seen: dict[str, str] = {}
    for requirement in [*core, *extra]:
        seen.setdefault(_requirement_name(requirement).lower(), pinned(requirement))
    return sorted(seen.values(), key=str.lower)


def _tree_files(root: Path, skip: frozenset[str] = _SKIP_DIRS) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = Path(dirpath, name)
            files[path.relative_to(root).as_posix()] = path.read_bytes()
            if len(files) > _MAX_CONTEXT_FILES:
                raise ImageBuildError(f"more than {_MAX_CONTEXT_FILES} files under {root}: is the build context right?")
    return files


def conveyor_source_files() -> dict[str, bytes]:
    """The running Conveyor package, copied into the image so both sides run the same Conveyor."""
    return _tree_files(Path(__file__).parent.parent)  # conveyor/, found without importing it from here


def _requirement_lines(requirements: list[str] | str | None, base: Path) -> list[str]:
    if requirements is None:
        return []
    if isinstance(requirements, list):
        return requirements
    path = Path(requirements).expanduser()
    if not path.is_absolute():
        path = base / path
    try:
        text = path.read_text()
    except OSError as err:
        raise ImageBuildError(f"cannot read the requirements file {requirements!r} ({path}): {err}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _env_line(environment: Mapping[str, str]) -> str:
    return "ENV " + " ".join(f"{key}={json.dumps(str(value))}" for key, value in sorted(environment.items()))


def _digest(dockerfile: str, files: Mapping[str, bytes], extra: Any = None) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"dockerfile": dockerfile, "extra": extra}, sort_keys=True).encode())
    for path in sorted(files):
        h.update(f"\0{path}\0{hashlib.sha256(files[path]).hexdigest()}".encode())
    return h.hexdigest()


def plan_image(settings: DockerSettings, *, code_root: str | None = None, extra_requirements: Iterable[str] = (),
               base_dir: str | Path | None = None) -> ImagePlan:
    """Render the Dockerfile and context and compute the tag; touches no engine.

    `extra_requirements` are what the flavor needs beside Conveyor (e.g. s3fs for an S3 artifact store);
    `base_dir` resolves relative paths in the settings (default: the working directory).
    """
    if settings.image:
        raise ValueError("DockerSettings.image is set: that image is used as is, nothing is planned")
    base = Path(base_dir or os.getcwd())
    plan = ImagePlan(dockerfile="", repository=settings.target_repository)
    parent = settings.parent_image or default_parent_image()
    if settings.dockerfile:
        dockerfile = Path(settings.dockerfile).expanduser()
        dockerfile = dockerfile if dockerfile.is_absolute() else base / dockerfile
        context = Path(settings.build_context_root).expanduser() if settings.build_context_root else dockerfile.parent
        context = context if context.is_absolute() else base / context
        if not dockerfile.is_file():
            raise ImageBuildError(f"DockerSettings.dockerfile {settings.dockerfile!r} does not exist ({dockerfile})")
        parent_files = _tree_files(context)
        parent_digest = _digest(dockerfile.read_text(), parent_files)
        plan.parent_build = (str(context), str(dockerfile))
        plan.parent_tag = parent = f"{PARENT_REPOSITORY}:{parent_digest[:HASH_CHARS]}"
    py = settings.python
    lines = [f"FROM {parent}",
             _env_line({"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "PIP_BREAK_SYSTEM_PACKAGES": "1",
                        "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1",
                        "PIP_ROOT_USER_ACTION": "ignore"})]
    if settings.apt_packages:
        packages = " ".join(sorted(set(settings.apt_packages)))
        lines.append("RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
                     f"{packages} && rm -rf /var/lib/apt/lists/*")
    # slow-changing layers first: an edit of Conveyor itself rebuilds only the last layers
    offline = settings.pip_source == "host"
    for name, requirements in (("conveyor-requirements", conveyor_requirements(extra_requirements)
                                if settings.install_conveyor else []),
                               ("requirements", _requirement_lines(settings.requirements, base))):
        if not requirements:
            continue
        plan.files[f".conveyor/{name}.txt"] = ("\n".join(requirements) + "\n").encode()
        lines.append(f"COPY .conveyor/{name}.txt /opt/conveyor/{name}.txt")
        if offline:  # the wheels are gathered at build time, not hashed: the requirement lines are
            plan.wheelhouses.append(name)
            lines += [f"COPY .conveyor/wheels-{name}/ /opt/conveyor/wheels-{name}/",
                      f"RUN {py} -m pip install --no-index --find-links /opt/conveyor/wheels-{name} "
                      f"-r /opt/conveyor/{name}.txt && rm -rf /opt/conveyor/wheels-{name}"]
        else:
            lines.append(f"RUN {py} -m pip install -r /opt/conveyor/{name}.txt")
    if settings.environment:
        lines.append(_env_line(settings.environment))
    pythonpath = []
    if settings.install_conveyor:
        plan.files.update({f".conveyor/lib/conveyor/{p}": b for p, b in conveyor_source_files().items()})
        lines.append(f"COPY .conveyor/lib/ {CONVEYOR_LIB}/")
        pythonpath.append(CONVEYOR_LIB)
    if settings.bake_code:
        if not code_root:
            raise ImageBuildError("DockerSettings.bake_code is set but the step has no code root to copy")
        from conveyor.artifacts.code_archive import code_files

        root = Path(code_root)
        plan.files.update({f"code/{p.relative_to(root).as_posix()}": p.read_bytes() for p in code_files(root)})
        lines.append(f"COPY code/ {CODE_DIR}/")
        pythonpath.append(CODE_DIR)
    if pythonpath:
        lines.append(_env_line({"PYTHONPATH": ":".join(pythonpath)}))
    lines.append(f"WORKDIR {WORKDIR}")
    plan.dockerfile = "\n".join(lines) + "\n"
    plan.digest = _digest(plan.dockerfile, plan.files)
    return plan


# -- the engine -----------------------------------------------------------------------------------------
_known: set[tuple[str, str]] = set()
_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def docker_client(docker_host: str | None, timeout: int = 600) -> Any:
    """A docker SDK client for `docker_host` (None: DOCKER_HOST or the default socket)."""
    try:
        import docker
    except ImportError:
        raise ConveyorError("the docker SDK is not installed: pip install 'conveyor[docker]'") from None
    try:
        if docker_host:
            return docker.DockerClient(base_url=docker_host, timeout=timeout)
        return docker.from_env(timeout=timeout)
    except docker.errors.DockerException as err:
        where = docker_host or os.environ.get("DOCKER_HOST") or "the default socket"
        raise ConveyorError(f"cannot reach the Docker engine at {where}: {err}. Is Docker (or `podman system "
                            "service`) running, and `docker_host` right?") from None


def image_exists(client: Any, tag: str) -> bool:
    import docker

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def _build(client: Any, context: str, tag: str, dockerfile: str | None, network_mode: str | None,
           log: Callable[[str], None] | None) -> None:
    import docker

    kwargs: dict[str, Any] = {"path": context, "tag": tag, "rm": True, "forcerm": True, "decode": True,
                              "pull": False}
    if dockerfile:
        kwargs["dockerfile"] = dockerfile
    if network_mode:
        kwargs["network_mode"] = network_mode
    tail: list[str] = []
    error = None
    try:
        for chunk in client.api.build(**kwargs):
            text = chunk.get("stream") or chunk.get("status") or ""
            if chunk.get("error") or chunk.get("errorDetail"):
                error = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message")
            if text:
                tail = (tail + [text])[-40:]
                if log is not None:
                    log(text)
    except docker.errors.APIError as err:
        error = str(err)
    if error or not image_exists(client, tag):
        raise ImageBuildError(f"building image {tag} failed: {error or 'no image was produced'}\n"
                              + "".join(tail)[-3000:])


def _gather_wheels(requirements: Path, target: Path, log: Callable[[str], None] | None) -> None:
    """`pip wheel` the requirements here (this machine's index, proxy, certificates and pip cache)."""
    import subprocess
    import sys

    target.mkdir(parents=True, exist_ok=True)
    if log is not None:
        log(f"gathering wheels for {requirements.name} on this machine\n")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(target),
                           "-r", str(requirements)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageBuildError(f"pip wheel -r {requirements.name} failed on this machine (exit {proc.returncode}); "
                              "set DockerSettings(pip_source='index') to install from the index inside the build "
                              f"instead:\n{proc.stderr[-3000:]}")


def build_plan(plan: ImagePlan, docker_host: str | None, *, network_mode: str | None = None,
               log: Callable[[str], None] | None = None, client: Any = None) -> tuple[str, bool]:
    """Build `plan` unless its tag exists; returns (tag, built)."""
    client = client or docker_client(docker_host)
    key = (docker_host or "", plan.tag)
    with _locks_guard:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:  # two steps of one run needing the same image build it once
        if key in _known and image_exists(client, plan.tag):
            return plan.tag, False
        if image_exists(client, plan.tag):
            _known.add(key)
            return plan.tag, False
        if plan.parent_build and plan.parent_tag and not image_exists(client, plan.parent_tag):
            context, dockerfile = plan.parent_build
            _build(client, context, plan.parent_tag, os.path.relpath(dockerfile, context), network_mode, log)
        tmp = tempfile.mkdtemp(prefix="conveyor-image-")
        try:
            for rel, data in plan.files.items():
                path = Path(tmp, rel)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            for name in plan.wheelhouses:
                _gather_wheels(Path(tmp, ".conveyor", f"{name}.txt"), Path(tmp, ".conveyor", f"wheels-{name}"), log)
            Path(tmp, "Dockerfile").write_text(plan.dockerfile + f'LABEL {SPEC_HASH_LABEL}="{plan.digest}"\n')
            _build(client, tmp, plan.tag, None, network_mode, log)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _known.add(key)
        return plan.tag, True


def ensure_image(settings: DockerSettings, docker_host: str | None = None, *, code_root: str | None = None,
                 extra_requirements: Iterable[str] = (), network_mode: str | None = None,
                 log: Callable[[str], None] | None = None, base_dir: str | Path | None = None) -> str:
    """The image reference a step with these settings runs in: `settings.image` as is, or the built tag.

    Builds through the Docker Engine API at `docker_host` only when no image has the content-hash tag yet.
    `network_mode` is the build's network ("host" where the default bridge cannot reach PyPI).
    """
    if settings.image:
        return settings.image
    plan = plan_image(settings, code_root=code_root, extra_requirements=extra_requirements, base_dir=base_dir)
    return build_plan(plan, docker_host, network_mode=network_mode, log=log)[0]


# -- the container a step runs in -------------------------------------------------------------------------
@dataclass(frozen=True)
class StepContainer:
    """What any container flavor (docker, kubernetes, ...) runs for one step attempt."""

    command: list[str]
    #: non-secret and secret values alike; the flavor decides how each reaches the container
    environment: dict[str, str]
    working_dir: str = WORKDIR


def step_container(entrypoint_command: list[str], environment: Mapping[str, str],
                   settings: DockerSettings | None = None) -> StepContainer:
    """The container command and environment for a step: the entrypoint from `entrypoint_request` run by the
    image's Python, the step's environment (run/step ids, the artifact store's credentials and options), and
    where to unpack the code archive. Nothing else: no database URL, no server, no token.
    """
    python = (settings or DockerSettings()).python
    env = {**environment, "PYTHONUNBUFFERED": "1", "CONVEYOR_CODE_CACHE": CONTAINER_CODE_CACHE}
    return StepContainer(command=[python, *entrypoint_command[1:]], environment=env)


def artifact_store_root(info: "StepRunInfo") -> str | None:
    """The artifact store's root, read back from the step's attempt folder (`conveyor.artifacts.layout`)."""
    from conveyor.artifacts.layout import AttemptLayout

    return AttemptLayout.of(info).root or None


def local_artifact_store_root(info: "StepRunInfo") -> str | None:
    """The store's local directory, which a container needs mounted at the same path; None for remote stores."""
    root = artifact_store_root(info)
    if root is None or "://" in root:
        return None
    return root
