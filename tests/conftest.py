"""Every test gets its own project directory (and so its own SQLite store and artifact store)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest_plugins = ["fixtures.postgres", "fixtures.sshd", "fixtures.slurm", "fixtures.moto_s3", "fixtures.ray_cluster",
                  "fixtures.kube_emulator",
                  "fixtures.podman", "fixtures.spark_cluster", "fixtures.vertex_fake", "fixtures.sagemaker_runner",
                  "fixtures.azureml_fake", "fixtures.browser", "fixtures.registry",
                  "fixtures.gcs_emulator", "fixtures.azurite"]

TESTS_DIR = Path(__file__).parent
os.environ.setdefault("CONVEYOR_QUIET", "")


def pytest_configure(config: pytest.Config) -> None:
    from fixtures.xdist_groups import register_group_marker

    register_group_marker(config)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups (pytest < 9.2)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each engine starts once, on one worker, under `--dist loadgroup` (tests/fixtures/xdist_groups.py)."""
    from fixtures.xdist_groups import mark_engine_groups

    mark_engine_groups(config, items)


@pytest.fixture(autouse=True)
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from conveyor.context import reset_contexts

    for var in ("CONVEYOR_STORE_URL", "CONVEYOR_STACK", "CONVEYOR_SECRETS_KEY"):
        monkeypatch.delenv(var, raising=False)
    # xdist's workers have COLUMNS=80 (a plain pytest none): the CLI's tables, not on a terminal, would wrap there
    for var in ("COLUMNS", "LINES"):
        monkeypatch.delenv(var, raising=False)
    # each test's secrets key, outside the project (as ~/.config/conveyor/secrets.key is outside the store)
    monkeypatch.setenv("CONVEYOR_SECRETS_KEY_FILE", str(tmp_path / "config" / "secrets.key"))
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.setenv("CONVEYOR_PROJECT_DIR", str(root))
    monkeypatch.chdir(root)
    reset_contexts()
    yield root
    reset_contexts()


@pytest.fixture
def conveyor_cli(project: Path):
    """Run the `conveyor` console script as a user would, in a real subprocess."""
    import subprocess

    exe = Path(sys.executable).with_name("conveyor")

    def run(*args: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 120,
            input: str | None = None):
        proc = subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=project, timeout=timeout,
                              env={**os.environ, **(env or {})}, input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"conveyor {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    return run


@pytest.fixture
def step_operator():
    from testkit import add_step_operator

    return add_step_operator
