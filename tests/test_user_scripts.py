"""Pipeline scripts as users write them, run as users run them: `python script.py` in the project directory.

Most scripts call their pipeline at module level, with no `if __name__ == "__main__":`. Every step process imports
the script to reach its step; the pipeline must still run once, not again inside each step (a fork bomb). Each
script here runs under a hard guard: every process it starts carries a marker in its environment, and more than
`KILL_AT` of them at once, or a run past its deadline, kills them all and fails the test, so a regression cannot
take CI down with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conveyor import Client

MARKER_ENV = "CONVEYOR_TEST_SCRIPT_MARKER"
#: the script, a running step, the local operator's spare worker and one ending step; a recursive run grows past it.
#: Python processes only: a library's helper is none of the pipeline's (importing asyncssh runs ctypes.util's
#: find_library, which runs gcc, collect2 and ld: under load they outlived a step and made 6)
MAX_PROCESSES = 5
KILL_AT = 12
AFTER_CALL = "AFTER-PIPELINE-CALL"

# The pipeline is called at module level. Every step checks that it got the script's own classes (not look-alikes
# rebuilt from a pickle) and changes its numpy input in place. OPERATORS lists the step operators to hop through
# before hopping in-process; the step processes do not see it (an ssh step has its own environment), and do not
# need to: they only import the script to reach `hop`.
UNGUARDED = '''
"""A pipeline script without `if __name__ == "__main__":`."""
import json
import os
import sys
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from pydantic import BaseModel

from conveyor import Client, pipeline, step

OPERATORS = [op for op in os.environ.get("SCRIPT_OPERATORS", "").split(",") if op]


@dataclass
class Point:
    x: int
    y: int


class Counter:
    def __init__(self, n: int) -> None:
        self.n = n


class Summary(BaseModel):
    name: str
    hops: int


Values = tuple[Annotated[Point, "point"], Annotated[Counter, "counter"], Annotated[Summary, "summary"],
               Annotated[np.ndarray, "array"]]


def check_types(*values: object) -> None:
    for value, cls in zip(values, (Point, Counter, Summary)):
        assert type(value) is cls, f"got {type(value).__module__}.{type(value).__qualname__}, not the script's {cls}"


@step
def start() -> Values:
    return Point(0, 0), Counter(0), Summary(name="start", hops=0), np.zeros(3)


@step
def hop(point: Point, counter: Counter, summary: Summary, array: np.ndarray) -> Values:
    check_types(point, counter, summary)
    array += 1  # in place, on the input
    return Point(point.x + 1, 0), Counter(counter.n + 1), Summary(name="hop", hops=summary.hops + 1), array


@step
def finish(point: Point, counter: Counter, summary: Summary, array: np.ndarray) -> dict:
    check_types(point, counter, summary)
    array += 1
    return {"x": point.x, "n": counter.n, "hops": summary.hops, "array": array.tolist()}


@pipeline(enable_cache=False)
def unguarded():
    values = start()
    for op in OPERATORS:
        values = hop.with_options(step_operator=op)(*values)
    finish(*hop(*values))  # back in this process


if "--load" in sys.argv:  # a later run of the script, only reading what the first one made
    run = Client().get_pipeline_run(sys.argv[-1])
else:
    run = unguarded()
print("AFTER-PIPELINE-CALL", flush=True)
loaded = {f"{name}.{out}": a.load() for name, s in run.steps.items() for out, a in s.outputs.items()}
for name in run.steps:
    if name != "finish":
        check_types(*(loaded[f"{name}.{out}"] for out in ("point", "counter", "summary")))
print(json.dumps({"run": run.id, "status": run.status, "report": loaded["finish.output"],
                  "stored_arrays": {k: v.tolist() for k, v in loaded.items() if k.endswith(".array")}}))
'''

# Steps that exist only when the file runs as a script (under the __main__ guard, made by a function), and one at
# module level that uses a name bound only under the guard.
GUARDED = '''
import json
import os
import threading

from conveyor import pipeline, step

OFFSET = 10
LOCK = threading.Lock()


class Unit:
    def __init__(self, v: int) -> None:
        self.v = v


@step
def first() -> int:
    return 1


@step(step_operator="local")
def scaled(u: Unit) -> Unit:
    return Unit(u.v * SCALE)  # SCALE exists only when the file runs as a script


def make_doubler():
    @step(step_operator="local")
    def doubler(u: Unit) -> Unit:
        assert type(u) is Unit, type(u)
        return Unit(u.v * 2 + OFFSET)
    return doubler


if __name__ == "__main__":
    SCALE = 3

    @step(step_operator="local")
    def guarded(x: int) -> Unit:
        return Unit(x + 1)

    @step(step_operator="local")
    def uses_a_lock() -> int:
        with LOCK:
            return 1

    @pipeline(enable_cache=False)
    def p():
        scaled(make_doubler()(guarded(first())))

    @pipeline(enable_cache=False)
    def unpicklable():
        uses_a_lock()

    if os.environ.get("SCRIPT_MODE") == "unpicklable":
        unpicklable()
    else:
        run = p()
        out = run.steps["scaled"].outputs["output"].load()
        print(json.dumps({"status": run.status, "type": type(out).__qualname__, "is_unit": type(out) is Unit,
                          "v": out.v}))
'''


@dataclass
class ScriptRun:
    returncode: int
    stdout: str
    stderr: str
    peak_processes: int  # of Python processes (MAX_PROCESSES)

    def report(self) -> dict[str, Any]:
        assert self.returncode == 0, f"the script exited {self.returncode}\n{self.stdout}\n{self.stderr}"
        return json.loads(self.stdout.strip().splitlines()[-1])


def _marked(marker: str) -> list[int]:
    """Processes whose environment carries the marker (children inherit it; /proc shows it as started)."""
    needle = f"{MARKER_ENV}={marker}".encode()
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as fh:
                    if needle in fh.read().split(b"\0"):
                        pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _count_python(pids: list[int]) -> int:
    """How many of `pids` run this interpreter (forked workers keep their parent's command line)."""
    count = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                count += fh.read().split(b"\0", 1)[0] == os.fsencode(sys.executable)
        except OSError:
            pass
    return count


def _kill_marked(marker: str) -> None:
    for _ in range(100):  # a process forking while we kill: repeat until none is left
        pids = _marked(marker)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)


def _run_count() -> int:
    return len(Client().list_pipeline_runs())


def run_script(project: Path, argv: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> ScriptRun:
    """`python ARGV` in the project, under the hard guard; the peak number of its Python processes is recorded.

    A second run in the project's store also stops it at once: a step process ran the pipeline again (and
    may be deadlocked in it, importing the script it is still importing, rather than forking on).
    """
    runs_before = _run_count()
    next_runs_check = 0.0
    marker = uuid.uuid4().hex
    full_env = {**os.environ, MARKER_ENV: marker, "CONVEYOR_QUIET": "1", **(env or {})}
    problem = None
    peak = 0
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, *argv], cwd=project, env=full_env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None:
                marked = _marked(marker)
                count = len(marked)
                peak = max(peak, _count_python(marked))
                if count >= KILL_AT:
                    problem = f"{count} processes at once: the pipeline is running again inside its steps"
                    break
                if time.monotonic() > next_runs_check:
                    next_runs_check = time.monotonic() + 0.5
                    if _run_count() > max(runs_before, 1):
                        problem = f"{_run_count()} pipeline runs: the pipeline ran again inside its steps"
                        break
                if time.monotonic() > deadline:
                    problem = f"the script did not finish within {timeout:g}s"
                    break
                time.sleep(0.05)
        finally:
            _kill_marked(marker)
            proc.kill()
            proc.wait()
        out.seek(0)
        err.seek(0)
        result = ScriptRun(proc.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                           peak)
    if problem:
        raise AssertionError(f"{problem}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}")
    return result


def _write(project: Path, relative: str, text: str) -> str:
    path = project / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return relative


def _check_ran_once(project: Path, result: ScriptRun, operators: list[str]) -> dict[str, Any]:
    """One run recorded, as expected; the code after the pipeline call ran once, in the script, in no step."""
    report = result.report()
    hops = len(operators) + 1
    assert report["status"] == "completed"
    assert report["report"] == {"x": hops, "n": hops, "hops": hops, "array": [float(hops + 1)] * 3}
    # each step changed its own copy: what is stored is what each step returned
    assert sorted(report["stored_arrays"].values()) == [[float(i)] * 3 for i in range(hops + 1)]
    assert result.stdout.count(AFTER_CALL) == 1, result.stdout
    assert result.peak_processes <= MAX_PROCESSES, f"{result.peak_processes} processes at once"
    if "local" in operators:  # the count sees the script and its step's process
        assert result.peak_processes >= 2, result.peak_processes
    runs = Client().list_pipeline_runs()
    assert [r.id for r in runs] == [report["run"]]
    run = Client().get_pipeline_run(report["run"])
    remote = [s for s in run.steps.values() if s.operator is not None]
    assert [s.operator for s in remote] == operators
    for s in run.steps.values():
        assert AFTER_CALL not in s.logs(), f"step {s.name} ran the script past its pipeline call"
    return report


@pytest.mark.parametrize("how", ["script", "module"])
def test_an_unguarded_script_runs_its_pipeline_once_with_a_local_step(project: Path, how: str) -> None:
    if how == "script":
        argv = [_write(project, "unguarded.py", UNGUARDED)]
    else:  # `python -m jobs.unguarded`: the step process imports it by its dotted name
        _write(project, "jobs/__init__.py", "")
        _write(project, "jobs/unguarded.py", UNGUARDED)
        argv = ["-m", "jobs.unguarded"]
    result = run_script(project, argv, env={"SCRIPT_OPERATORS": "local"})
    report = _check_ran_once(project, result, ["local"])
    # a later process of the same script loads every artifact as the script's own classes, and runs nothing
    again = run_script(project, [*argv, "--load", report["run"]]).report()
    assert again == report
    assert len(Client().list_pipeline_runs()) == 1


def test_an_unguarded_script_runs_its_pipeline_once_with_local_and_ssh_steps(project: Path, sshd_server,
                                                                              step_operator, tmp_path: Path) -> None:
    step_operator("box", "ssh", hostname=sshd_server.host, port=sshd_server.port, username=sshd_server.username,
                  key_file=str(sshd_server.key_path), known_hosts=str(sshd_server.known_hosts),
                  python=sshd_server.python, poll_interval=0.2, remote_dir=f"{sshd_server.remote_dir}/{tmp_path.name}")
    script = _write(project, "unguarded.py", UNGUARDED)
    result = run_script(project, [script], env={"SCRIPT_OPERATORS": "local,box"})
    _check_ran_once(project, result, ["local", "box"])


def test_steps_defined_under_the_main_guard_or_in_a_function_travel_by_value(project: Path) -> None:
    script = _write(project, "guarded.py", GUARDED)
    report = run_script(project, [script]).report()
    assert report == {"status": "completed", "type": "Unit", "is_unit": True, "v": (2 * 2 + 10) * 3}
    run = Client().list_pipeline_runs()
    assert len(run) == 1


def test_a_step_that_cannot_travel_by_value_is_refused_when_the_pipeline_is_compiled(project: Path) -> None:
    script = _write(project, "guarded.py", GUARDED)
    result = run_script(project, [script], env={"SCRIPT_MODE": "unpicklable"})
    assert result.returncode != 0
    assert "PipelineDefinitionError" in result.stderr and "step 'uses_a_lock'" in result.stderr
    assert 'under `if __name__ == "__main__":`' in result.stderr and "cannot pickle" in result.stderr
    assert "define the step at the module level of its file" in result.stderr
    assert "AttributeError" not in result.stderr
    assert Client().list_pipeline_runs() == []
