"""A step killed while it writes a large output leaves no artifact anyone can see, and running again succeeds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from testkit import add_step_operator, assert_nothing_left

from conveyor import Client

BIGWRITE = textwrap.dedent('''
    """A materializer that writes 1 MiB chunks and, the first time only, stops halfway until it is killed."""
    import os
    import time
    from pathlib import Path
    from typing import Any

    from conveyor import pipeline, step
    from conveyor.artifacts.materializers import BaseMaterializer, register_materializer


    class Big:
        def __init__(self, chunks: int, marker: str) -> None:
            self.chunks, self.marker = chunks, marker


    @register_materializer
    class BigMaterializer(BaseMaterializer):
        ASSOCIATED_TYPES = (Big,)

        def save(self, data: Big) -> None:
            with self.store.open(self.path_for("data.bin"), "wb") as fh:
                for i in range(data.chunks):
                    fh.write(os.urandom(1 << 20))
                    if i == data.chunks // 2 and not Path(data.marker).exists():
                        fh.flush()
                        Path(data.marker).write_text(str(os.getpid()))
                        time.sleep(120)  # halfway through a large write: the test kills us here

        def load(self, data_type: Any) -> int:
            return os.path.getsize(self.store.local_path(self.path_for("data.bin")))


    @step
    def produce(chunks: int, marker: str) -> Big:
        return Big(chunks, marker)


    @step
    def consume(size: Any) -> int:
        return size


    def make(operator):
        @pipeline(enable_cache=False, name="bigwrite")
        def p(marker: str):
            consume(produce.with_options(step_operator=operator)(64, marker))
        return p


    if __name__ == "__main__":
        import sys
        make(sys.argv[1] if sys.argv[1] != "-" else None)(sys.argv[2])
''')


def _start(project: Path, marker: Path, operator: str | None) -> tuple[subprocess.Popen, int]:
    (project / "bigwrite.py").write_text(BIGWRITE)
    proc = subprocess.Popen([sys.executable, "bigwrite.py", operator or "-", str(marker)], cwd=project,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "CONVEYOR_QUIET": "1"})
    deadline = time.monotonic() + 60
    while not marker.exists() or not marker.read_text():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(f"the write never reached its halfway point: {proc.stderr.read()}")
        time.sleep(0.02)
    return proc, int(marker.read_text())


def _assert_nothing_visible(run_id: str, step_run) -> None:
    from conveyor.artifacts.materializers import load_artifact
    from conveyor.context import get_context
    from conveyor.exceptions import ConveyorError

    assert step_run.outputs == {}, "a half-written artifact was recorded"
    store = get_context().load_stack().artifact_store.artifact_store()
    attempt = store.join("runs", run_id, "steps", "produce", f"attempt-{step_run.attempt}")
    output = f"{attempt}/outputs/output"
    assert not store.exists(output), "the half-written output is visible at its final location"
    with pytest.raises(ConveyorError):
        load_artifact(output, store)


def test_a_step_killed_mid_write_on_the_local_operator_leaves_nothing_and_a_rerun_succeeds(project, tmp_path):
    add_step_operator("loc", "local")
    marker = tmp_path / "halfway"
    proc, step_pid = _start(project, marker, "loc")
    assert step_pid != proc.pid, "the write must happen in the step operator's process"
    os.kill(step_pid, signal.SIGKILL)
    assert proc.wait(timeout=60) != 0
    run = Client().get_pipeline_run(Client().list_pipeline_runs()[0].id)
    produce = run.steps["produce"]
    assert run.status == "failed" and produce.status == "failed" and produce.failure_kind == "crash", produce.error
    _assert_nothing_visible(run.id, produce)
    assert_nothing_left(produce)
    again = subprocess.run([sys.executable, "bigwrite.py", "loc", str(marker)], cwd=project, capture_output=True,
                           text=True, env={**os.environ, "CONVEYOR_QUIET": "1"}, timeout=120)
    assert again.returncode == 0, again.stderr
    rerun = Client().get_pipeline_run(Client().list_pipeline_runs()[0].id)
    assert rerun.steps["consume"].outputs["output"].load() == 64 << 20


def test_an_orchestrator_killed_while_an_in_process_step_writes_leaves_nothing_and_resume_finishes(
        project, tmp_path, conveyor_cli):
    marker = tmp_path / "halfway"
    proc, step_pid = _start(project, marker, None)
    assert step_pid == proc.pid
    proc.kill()
    proc.wait(timeout=30)
    run = Client().get_pipeline_run(Client().list_pipeline_runs()[0].id)
    _assert_nothing_visible(run.id, run.steps["produce"])
    run_dir = project / ".conveyor" / "artifacts" / "runs" / run.id
    assert list(run_dir.rglob(".output.tmp-*")), "the killed write left no hidden temporary folder to clean"
    conveyor_cli("run", "resume", run.id)
    assert list(run_dir.rglob(".*.tmp-*")) == [], "resume must remove what killed writers left"
    final = Client().get_pipeline_run(run.id)
    assert final.status == "completed" and final.steps["produce"].attempt == 2
    assert final.steps["consume"].outputs["output"].load() == 64 << 20
