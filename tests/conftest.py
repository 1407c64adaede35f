"""Every test gets its own project directory (and so its own SQLite store and artifact store)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest_plugins = ["fixtures.postgres"]

TESTS_DIR = Path(__file__).parent
os.environ.setdefault("CONVEYOR_QUIET", "")


@pytest.fixture(autouse=True)
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from conveyor.context import reset_contexts

    for var in ("CONVEYOR_STORE_URL", "CONVEYOR_STACK"):
        monkeypatch.delenv(var, raising=False)
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

    def run(*args: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 120):
        proc = subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=project, timeout=timeout,
                              env={**os.environ, **(env or {})})
        if check and proc.returncode != 0:
            raise AssertionError(f"conveyor {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    return run


def add_step_operator(name: str, flavor: str, stack: str = "default", **config: object) -> None:
    """Register a step operator and add it to a stack, through the same store calls the CLI makes."""
    from conveyor.config.base import validate_strict
    from conveyor.context import get_context

    ctx = get_context()
    ctx.ensure_defaults()
    cfg = validate_strict(ctx.registry.get("step_operator", flavor).config_class, dict(config), name)
    cid = ctx.store.create_component("step_operator", name, flavor, cfg.model_dump(exclude_unset=True, mode="json"))
    record = ctx.store.get_stack(stack)
    ctx.store.set_stack_components(stack, [c["id"] for c in record["components"]] + [cid])


@pytest.fixture
def step_operator():
    return add_step_operator


def assert_nothing_left(step_run) -> None:
    """Neither the process the receipt names nor anything carrying the step run's id is still running."""
    from conveyor.utils.procs import alive, pids_with_marker

    assert pids_with_marker(f"--step_run_id {step_run.id}") == []
    pid = ((step_run.submission or {}).get("data") or {}).get("pid")
    if pid is not None:
        assert not alive(int(pid)), f"step process {pid} of {step_run.name} is still running"
