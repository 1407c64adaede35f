"""Helpers the tests share (a module of its own: importing from a conftest is ambiguous with several of them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def add_step_operator(name: str, flavor: str, stack: str = "default", **config: Any) -> None:
    """Register a step operator (or update its config) and add it to a stack, as the CLI would."""
    from conveyor.config.base import validate_strict
    from conveyor.context import get_context

    ctx = get_context()
    ctx.ensure_defaults()
    cfg = validate_strict(ctx.registry.get("step_operator", flavor).config_class, dict(config), name)
    data = cfg.model_dump(exclude_unset=True, mode="json")
    if ctx.store.get_component("step_operator", name):
        ctx.store.update_component("step_operator", name, data)
        return
    cid = ctx.store.create_component("step_operator", name, flavor, data)
    record = ctx.store.get_stack(stack)
    ctx.store.set_stack_components(stack, [c["id"] for c in record["components"]] + [cid])


def assert_nothing_left(step_run: Any) -> None:
    """Neither the process the receipt names nor anything carrying the step run's id is still running."""
    from conveyor.utils.procs import alive, pids_with_marker

    assert pids_with_marker(f"--step_run_id {step_run.id}") == []
    pid = ((step_run.submission or {}).get("data") or {}).get("pid")
    if pid is not None:
        assert not alive(int(pid)), f"step process {pid} of {step_run.name} is still running"


def wait_until(predicate: Any, timeout: float = 300.0, what: str = "condition", interval: float = 0.05) -> None:
    """Poll `predicate` until it holds, with a generous deadline (a backend starting a job on a loaded machine can
    take minutes): tests wait for conditions, never fixed sleeps; the deadline only keeps a hang from lasting."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"{what}: not reached within {timeout:g}s")


def kill_marked(marker: str) -> None:
    """SIGKILL every process whose command line carries `marker` (a test's own), so nothing outlives a failure."""
    import os
    import signal

    from conveyor.utils.procs import pids_with_marker

    for pid in pids_with_marker(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def mounted_tmpfs(target: Any, options: str) -> Any:
    """A real tmpfs mounted at `target` for the duration of a fixture (a full disk, a read-only mount)."""
    import subprocess
    from pathlib import Path

    from fixtures.engines import require_or_skip

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, text=True)
    if proc.returncode != 0:
        require_or_skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def run_python(script: str, project: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`script` as a user runs it: saved as `script.py` in the project and run there by a fresh interpreter with
    the project's store (quiet); with `check`, a failing script fails the test with its stderr."""
    path = project / "script.py"
    path.write_text(script)
    env = {**os.environ, "CONVEYOR_PROJECT_DIR": str(project), "CONVEYOR_QUIET": "1"}
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, cwd=project, env=env,
                          timeout=120, check=False)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc
