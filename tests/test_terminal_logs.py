"""Logs are never lost (issue 12 §7): what an in-process step prints is stored and shown prefixed also when
stdout is a terminal, where the live display runs. The pipeline runs under a real pseudo-terminal
(util-linux `script`, from bsdutils: scripts/install-system-deps.sh)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent('''
    import sys
    from conveyor import pipeline, step

    @step
    def speak() -> int:
        print(f"stdout is a terminal: {sys.__stdout__.isatty()}")
        for i in range(3):
            print(f"hello from a terminal {i}", flush=True)
        print("to stderr too", file=sys.stderr)
        sys.stdout.write("a last line without newline")
        return 1

    @step(step_operator="local")
    def elsewhere(x: int) -> int:
        print("from the local step")
        return x

    @pipeline(enable_cache=False)
    def spoken():
        elsewhere(speak())

    if __name__ == "__main__":
        spoken()
''')

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def test_an_in_process_step_run_from_a_terminal_is_stored_and_shown_prefixed(project: Path, conveyor_cli):
    assert shutil.which("script"), "needs util-linux `script`: bash scripts/install-system-deps.sh (Debian: bsdutils)"
    (project / "spoken.py").write_text(SCRIPT)
    env = {**os.environ, "COLUMNS": "160", "TERM": "xterm-256color"}
    env.pop("CONVEYOR_QUIET", None)
    command = f"{shlex.quote(sys.executable)} spoken.py"
    proc = subprocess.run(["script", "-qec", command, "/dev/null"], cwd=project, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=300)
    screen = ANSI.sub("", proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace"))
    assert proc.returncode == 0, screen
    assert "[speak] stdout is a terminal: True" in screen, screen  # the live display's path, not the plain one
    for line in ("hello from a terminal 0", "hello from a terminal 2", "to stderr too", "a last line without newline"):
        assert f"[speak] {line}" in screen, f"{line!r} not shown prefixed:\n{screen}"
    assert "[elsewhere] from the local step" in screen, screen

    stored = conveyor_cli("run", "logs", "latest", "speak").stdout
    assert "(no output)" not in stored
    for line in ("stdout is a terminal: True", "hello from a terminal 0", "hello from a terminal 1",
                 "hello from a terminal 2", "to stderr too", "a last line without newline"):
        assert line in stored, f"{line!r} not stored:\n{stored}"
