"""What a person sees in a terminal, and what the remote side of a step needs (not the metadata store)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conveyor import pipeline, step

SCRIPT = textwrap.dedent('''
    import time
    from conveyor import pipeline, step

    @step
    def prepare() -> int:
        return 1

    @step(step_operator="local")
    def train(x: int) -> int:
        for i in range(3):
            print(f"epoch {i}", flush=True)
            time.sleep(0.3)
        return x

    @pipeline
    def shown():
        train(prepare())

    if __name__ == "__main__":
        shown()
''')


def test_live_display_in_a_terminal(project: Path) -> None:
    (project / "shown.py").write_text(SCRIPT)
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm-256color"}
    env.pop("CONVEYOR_QUIET", None)
    proc = subprocess.Popen([sys.executable, "shown.py"], cwd=project, stdin=follower, stdout=follower, stderr=follower,
                            env=env, close_fds=True)
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(leader)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, screen
    for text in ("step", "status", "where", "duration", "prepare", "in-process", "local (local)", "completed",
                 "[train] epoch 0", "[train] epoch 2"):
        assert text in screen, f"{text!r} not shown:\n{screen}"
    assert "running" in screen  # the live table showed the step while it ran
    assert "Run shown-" in screen and "completed." in screen


def test_the_remote_side_never_touches_the_metadata_store() -> None:
    @step(step_operator="local", settings={"step_operator.local": {"environment": {
        "CONVEYOR_STORE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/does_not_exist",
        "CONVEYOR_PROJECT_DIR": "/nonexistent"}}})
    def isolated(x: int) -> int:
        import sys

        assert "sqlalchemy" not in sys.modules, "the remote side imported the store's database layer"
        return x * 3

    @step
    def seven() -> int:
        return 7

    @pipeline
    def p():
        isolated(seven())

    run = p()
    assert run.steps["isolated"].outputs["output"].load() == 21
