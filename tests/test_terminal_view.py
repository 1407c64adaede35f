"""The terminal says what the dashboard says (issue 16 §3): the live table ticks, tells attempts and collapses wide
fan-outs into counts; a run ends with the commands to type next; a failed step's traceback is printed once, the
user's frames first; `conveyor run describe` shows each attempt and `--dag` draws the DAG.

Pipelines run as a user runs them: a script under a real pseudo-terminal (util-linux `script`, as in
tests/test_terminal_logs.py) or through a pipe, and the CLI as a real subprocess.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]")


def run_script(project: Path, name: str, source: str, *, terminal: bool = True, lines: int = 50,
               ) -> tuple[int, str]:
    """Run `source` as `python name` the way a user does: in a terminal (COLUMNS x LINES) or through a pipe.
    Returns the exit code and what was shown, escape codes removed, one screen line per line."""
    (project / name).write_text(textwrap.dedent(source))
    env = {**os.environ, "COLUMNS": "160", "LINES": str(lines), "TERM": "xterm-256color"}
    env.pop("CONVEYOR_QUIET", None)
    if terminal:
        assert shutil.which("script"), "needs util-linux `script`: bash scripts/install-system-deps.sh (bsdutils)"
        argv = ["script", "-qec", f"{shlex.quote(sys.executable)} {name}", "/dev/null"]
    else:
        argv = [sys.executable, name]
    proc = subprocess.run(argv, cwd=project, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
    raw = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    return proc.returncode, ANSI.sub("", raw).replace("\r\n", "\n").replace("\r", "\n")


def run_name_in(screen: str) -> str:
    found = re.search(r"^Run (\S+) (completed|failed|stopped)\.$", screen, re.M)
    assert found, f"no 'Run NAME STATUS.' line:\n{screen}"
    return found.group(1)


LIVE = '''
    import os, time
    from pathlib import Path
    from conveyor import pipeline, step

    @step
    def slow() -> int:
        time.sleep(2.5)
        return 1

    @step(retry={"max_retries": 2, "delay": 0.1})
    def flaky() -> int:
        marker = Path("flaky-tried")
        if not marker.exists():
            marker.write_text("1")
            raise RuntimeError("first attempt fails")
        time.sleep(1.5)  # long enough for the live table to show the second attempt
        return 2

    @pipeline(enable_cache=False)
    def live():
        slow()
        flaky()

    if __name__ == "__main__":
        live()
'''


def test_live_table_ticks_shows_the_attempt_and_ends_with_next_commands(project: Path) -> None:
    code, screen = run_script(project, "live.py", LIVE)
    assert code == 0, screen
    # the elapsed time of a running step is computed at each redraw: successive frames show it growing
    ticks = [float(t) for t in re.findall(r"│ slow\s+│ running\s+│[^│]*│\s*([\d.]+)s", screen)]
    assert len(set(ticks)) >= 3 and max(ticks) > min(ticks), f"elapsed did not tick: {ticks}\n{screen}"
    assert re.search(r"│ flaky\s+│ running\s+│[^│]*│[^│]*│ attempt 2/3", screen), screen
    run = run_name_in(screen)
    after = screen[screen.index(f"Run {run} completed."):]
    assert f"conveyor run describe {run}" in after and "conveyor dashboard" in after, after
    assert "conveyor run logs" not in after  # nothing failed: no failed step to point at


FAILING = '''
    from conveyor import pipeline, step

    def check(value):
        raise ValueError(f"bad data {value}")

    @step
    def load() -> int:
        return 42

    @step(step_operator="local", retry={"max_retries": 1, "delay": 0})
    def train(x: int) -> int:
        return check(x)

    @pipeline(enable_cache=False)
    def failing():
        train(load())

    if __name__ == "__main__":
        failing()
'''


def _check_traceback_once(screen: str) -> None:
    # the raising line is in the traceback; the step printed it on both attempts (echoed live) and the run's
    # error carries the last one: shown exactly once
    assert screen.count('raise ValueError(f"bad data {value}")') == 1, screen
    block = screen[screen.index("Traceback of the step:"):]
    user = block.index('failing.py", line')
    assert "conveyor/" not in block[:user], f"a conveyor frame before the user's:\n{block}"
    assert "of conveyor's own code, which called the step, not shown" in block, block


def test_a_failed_remote_steps_traceback_is_printed_once_user_frames_first(project: Path) -> None:
    code, screen = run_script(project, "failing.py", FAILING)
    assert code != 0, screen
    _check_traceback_once(screen)
    run = run_name_in(screen)
    assert re.search(r"│ train\s+│ failed\s+│ local \(local\)\s+│[^│]*│ attempt 2/2 · ValueError: bad data 42", screen), \
        screen
    for hint in (f"conveyor run describe {run}", f"conveyor run logs {run} train", "conveyor dashboard"):
        assert hint in screen, f"{hint!r} not suggested:\n{screen}"


def test_without_a_terminal_the_output_is_one_line_per_change(project: Path) -> None:
    code, screen = run_script(project, "failing.py", FAILING, terminal=False)
    assert code != 0, screen
    _check_traceback_once(screen)
    lines = screen.splitlines()
    assert "  step train running on local (local): attempt 1/2" in lines, screen
    assert "  step train running on local (local): attempt 2/2" in lines, screen
    assert any(ln.startswith("  step train failed on local (local) in ") for ln in lines), screen
    assert screen.count("step load completed") == 1  # no redraws


FAN_OUT = '''
    import time
    from conveyor import pipeline, step

    @step
    def split() -> int:
        return 1

    @step
    def work(x: int, i: int) -> int:
        if i < 4:
            time.sleep(1.0)
        return x + i

    @pipeline(enable_cache=False)
    def wide():
        s = split()
        for i in range(300):
            work(s, i, id=f"work_{i}")

    if __name__ == "__main__":
        wide()
'''


def test_a_fan_out_wider_than_the_screen_collapses_into_counts(project: Path) -> None:
    code, screen = run_script(project, "wide.py", FAN_OUT, lines=40)
    assert code == 0, screen
    counts = re.findall(r"^\s*(\d+) completed · (\d+) running(?: · (\d+) pending)?  \((\d+) of 301 steps listed\)",
                        screen, re.M)
    assert counts, f"no counts line:\n{screen}"
    for done, running, pending, listed in counts:
        assert int(done) + int(running) + int(pending or 0) == 301
        assert 0 < int(listed) <= min(int(running), 40)  # running ones listed as far as they fit, the rest counted
    frame_rows = max(len(re.findall(r"^│ work_\d+", frame, re.M)) for frame in screen.split("run wide-"))
    assert frame_rows <= 40, screen  # no frame taller than the terminal
    assert re.search(r"^\s*301 completed$", screen, re.M), screen  # the end: counts, not 301 rows


def test_describe_shows_each_attempt_with_its_backend_job(project: Path, conveyor_cli) -> None:
    code, screen = run_script(project, "failing.py", FAILING, terminal=False)
    assert code != 0, screen
    run = run_name_in(screen)
    described = json.loads(conveyor_cli("run", "describe", run, "--output", "json").stdout)
    train = next(s for s in described["steps"] if s["name"] == "train")
    assert [a["number"] for a in train["attempts"]] == [1, 2]
    for attempt in train["attempts"]:
        assert attempt["backend_job_id"] and attempt["backend_job_id"].isdigit(), attempt  # the local step's pid
        assert attempt["status"] == "failed" and attempt["failure_kind"] == "user"
        assert attempt["running_s"] is not None and attempt["running_s"] >= 0
    assert train["upstream"] == ["load"]
    text = conveyor_cli("run", "describe", run).stdout
    table = text[text.index("Attempts:"):]
    for attempt in train["attempts"]:
        assert re.search(rf"^train #{attempt['number']}\s+failed \(user\)\s+{attempt['backend_job_id']}\s", table,
                         re.M), table
    assert re.search(r"^load #1\s+completed\s+in-process\s", table, re.M), table


DAG = '''
    from conveyor import pipeline, step

    @step
    def source() -> int:
        return 1

    @step
    def left(x: int) -> int:
        return x

    @step
    def right(x: int) -> int:
        return x

    @step
    def join(a: int, b: int) -> int:
        return a + b

    @step
    def part(x: int, i: int) -> int:
        return x + i

    @step(step_operator="local")
    def gather(a: int, b: int, c: int) -> int:
        return a + b + c

    @pipeline(enable_cache=False)
    def shapes():
        s = source()
        j = join(left(s), right(s))
        parts = [part(j, i, id=f"part_{i}") for i in range(30)]
        gather(parts[0], parts[1], parts[29])

    if __name__ == "__main__":
        shapes()
'''


def test_describe_dag_draws_a_diamond_and_collapses_a_fan_out(project: Path, conveyor_cli) -> None:
    code, screen = run_script(project, "shapes.py", DAG, terminal=False)
    assert code == 0, screen
    run = run_name_in(screen)
    dag = conveyor_cli("run", "describe", run, "--dag").stdout
    rows = {m.group("name"): m for m in re.finditer(
        r"^\s*(?P<layer>\d*) [✓✗▶·■\-] (?P<name>\w+)\s+(?P<status>\w+)\s+(?P<where>in-process|local \(local\))"
        r"\s*(?:← (?P<ups>.*))?$", dag, re.M)}
    layer_of: dict[str, int] = {}
    current = 0
    for line in dag.splitlines():  # a layer's number is on its first line only
        found = re.match(r"^\s*(\d+) ", line)
        current = int(found.group(1)) if found else current
        named = re.match(r"^\s*\d* [✓✗▶·■\-▤] (\w+)", line)
        if named:
            layer_of[named.group(1)] = current
    assert layer_of["source"] == 1 and layer_of["left"] == layer_of["right"] == 2 and layer_of["join"] == 3, dag
    assert rows["join"]["ups"] == "left, right" and rows["left"]["ups"] == "source", dag
    assert rows["gather"]["where"] == "local (local)" and rows["gather"]["status"] == "completed", dag
    # 30 siblings sharing `join`: one line with their counts, not 30
    assert not any(re.match(r"^\s*\d* [✓✗▶·■\-] part_\d+", line) for line in dag.splitlines()), dag
    assert re.search(r"^\s*4 ▤ part_\* \(30 steps\)\s+in-process\s+← join$", dag, re.M), dag
    assert re.search(r"^\s+30 completed$", dag, re.M), dag
    assert rows["gather"]["ups"] == "part_* (30)", dag
    assert layer_of["gather"] == 5


PREEMPTED = '''
    from conveyor import pipeline, step

    @step(step_operator="spot")
    def train() -> int:
        import time
        time.sleep(5)
        return 1

    @pipeline(enable_cache=False)
    def preempted():
        train()

    if __name__ == "__main__":
        preempted()
'''


def test_a_preempted_step_says_it_is_retrying(project: Path, step_operator) -> None:
    step_operator("spot", "fault", fault="preempt", fault_after=0.2, infrastructure_retries=1)
    code, screen = run_script(project, "preempted.py", PREEMPTED, terminal=False)
    assert code != 0, screen
    lines = screen.splitlines()
    assert any(ln.startswith("  step train running on spot (fault): preempted, retrying: job preempted") for ln in lines), \
        screen
    # no retries of its own: the re-submission after the preemption is the one more attempt
    assert "  step train running on spot (fault): attempt 2/2" in lines, screen


def test_a_queued_step_shows_how_long_and_why_it_waits(project: Path, step_operator) -> None:
    step_operator("spot", "fault", fault="stuck_pending", pending_timeout=2.5)
    code, screen = run_script(project, "preempted.py", PREEMPTED)
    assert code != 0, screen
    waits = re.findall(r"│ train\s+│ queued\s+│[^│]*│[^│]*│ queued (\d+)s: fault injected: PartitionConfig", screen)
    assert waits and len(set(waits)) >= 2, f"no ticking queue reason: {waits}\n{screen}"
