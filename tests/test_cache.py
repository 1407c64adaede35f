"""The cache never serves a stale or missing result: what the key covers, its escape hatches, and the checks a hit
(and every artifact load) must pass. Pipelines run as users run them: scripts in a subprocess, the real CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from steps_lib import executions, touch_counter

from conveyor import Client, pipeline, step
from conveyor.artifacts import ArtifactCorruptedError
from conveyor.exceptions import RunFailedError

PIPE = '''
from conveyor import pipeline, step
from lib.helpers import scale


def offset() -> int:
    return 1


@step
def compute(x: int) -> int:
    return scale(x) + offset()


@step
def unrelated() -> int:
    return 0


@pipeline(name="fingerprint")
def p():
    compute(3)
    unrelated()


if __name__ == "__main__":
    print("RUN", p().name)
'''


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def _run_script(project: Path, script: str = "pipe.py") -> tuple[Any, str]:
    """Run the script as a user would; returns (the PipelineRun it made, its stdout)."""
    proc = subprocess.run([sys.executable, script], cwd=project, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CONVEYOR_QUIET": "0"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    name = re.search(r"^RUN (\S+)$", proc.stdout, re.M)
    assert name, proc.stdout
    return Client().get_pipeline_run(name.group(1)), proc.stdout


def test_editing_an_imported_project_module_reruns_the_step_and_unrelated_edits_do_not(project: Path) -> None:
    _write(project / "lib" / "__init__.py", "")
    _write(project / "lib" / "helpers.py", "from .consts import FACTOR\n\n\ndef scale(x):\n    return x * FACTOR\n")
    _write(project / "lib" / "consts.py", "FACTOR = 2\n")
    _write(project / "unused.py", "VALUE = 1\n")
    _write(project / "pipe.py", PIPE)

    first, _ = _run_script(project)
    assert first.steps["compute"].status == "completed"
    assert first.steps["compute"].outputs["output"].load() == 7

    # a file nobody imports, and another step of the same file: nothing compute runs changed
    _write(project / "unused.py", "VALUE = 2\n")
    _write(project / "pipe.py", PIPE.replace("return 0", "return 0  # edited"))
    second, _ = _run_script(project)
    assert second.steps["compute"].status == "cached"
    assert second.steps["unrelated"].status == "completed"

    # a module the step's module imports only indirectly (lib.helpers -> lib.consts, a relative import)
    _write(project / "lib" / "consts.py", "FACTOR = 10\n")
    third, _ = _run_script(project)
    assert third.steps["compute"].status == "completed"
    assert third.steps["compute"].outputs["output"].load() == 31

    # a helper function in the step's own module
    _write(project / "pipe.py", PIPE.replace("return 1", "return 5"))
    fourth, _ = _run_script(project)
    assert fourth.steps["compute"].status == "completed"
    assert fourth.steps["compute"].outputs["output"].load() == 35


def test_the_fingerprint_follows_imports_inside_functions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from conveyor.pipelines.code_fingerprint import code_fingerprint

    root = tmp_path / "code"
    _write(root / "fp_steps.py", "import json\n\n\ndef f():\n    import fp_late\n    return fp_late.X\n")
    _write(root / "fp_late.py", "X = 1\n")
    monkeypatch.syspath_prepend(str(root))
    func = importlib.import_module("fp_steps").f
    before = code_fingerprint(func, str(root))
    assert code_fingerprint(func, str(root)) == before
    (root / "fp_late.py").write_text("X = 100\n")  # another size: the per-process cache sees it at once
    assert code_fingerprint(func, str(root)) != before


def test_cache_version_is_part_of_the_key(tmp_path: Path) -> None:
    log = str(tmp_path / "executions")
    versioned = touch_counter.with_options(cache_version="1")

    @pipeline
    def p(version: int):
        if version == 0:
            touch_counter(log, 1)
        else:
            versioned.with_options(cache_version=version)(log, 1)

    statuses = [p(version=v).steps["touch_counter"].status for v in (0, 1, 1, 2, 0)]
    assert statuses == ["completed", "completed", "cached", "completed", "cached"]
    assert executions(log) == 3

    @step(cache_version="data-2024-06")
    def load() -> int:
        return 1

    assert load.cache_version == "data-2024-06"
    with pytest.raises(TypeError, match="cache_version must be a string or an integer"):
        step(cache_version=1.5)(load.entrypoint)


def test_a_stack_with_another_artifact_store_does_not_reuse_outputs_stored_in_the_first(
        tmp_path: Path, conveyor_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    log = str(tmp_path / "executions")

    @pipeline
    def p():
        touch_counter(log, 5)

    first = p()
    conveyor_cli("artifact-store", "register", "elsewhere", "--flavor=local", f"--path={tmp_path / 'elsewhere'}")
    conveyor_cli("stack", "register", "other", "-o", "default", "-a", "elsewhere")
    monkeypatch.setenv("CONVEYOR_STACK", "other")
    other = p()
    assert other.steps["touch_counter"].status == "completed"
    assert other.steps["touch_counter"].outputs["output"].uri.startswith(str(tmp_path / "elsewhere"))
    assert p().steps["touch_counter"].status == "cached"  # from its own store
    monkeypatch.delenv("CONVEYOR_STACK")
    back = p()
    assert back.steps["touch_counter"].status == "cached"
    assert back.steps["touch_counter"].cached_from == first.steps["touch_counter"].id
    assert executions(log) == 2


def test_a_cache_hit_whose_output_was_deleted_or_damaged_runs_again_and_says_so(project: Path) -> None:
    _write(project / "pipe.py", '''
        from conveyor import pipeline, step


        @step
        def produce() -> str:
            return "abcdef"


        @pipeline(name="damaged")
        def p():
            produce()


        if __name__ == "__main__":
            print("RUN", p().name)
    ''')
    first, _ = _run_script(project)
    output = Path(first.steps["produce"].outputs["output"].uri)
    data_file = next(f for f in output.iterdir() if not f.name.startswith("."))

    data_file.write_bytes(data_file.read_bytes().replace(b"c", b"C"))  # same size, other bytes
    second, stdout = _run_script(project)
    assert second.steps["produce"].status == "completed"
    assert "cached result not used, running the step again" in stdout and "corrupted" in stdout
    assert second.steps["produce"].outputs["output"].load() == "abcdef"

    import shutil

    shutil.rmtree(second.steps["produce"].outputs["output"].uri)
    third, stdout = _run_script(project)
    assert third.steps["produce"].status == "completed"
    assert "cached result not used" in stdout and "no artifact at" in stdout
    fourth, _ = _run_script(project)
    assert fourth.steps["produce"].status == "cached"
    assert fourth.steps["produce"].cached_from == third.steps["produce"].id


def _swap(a: Path, b: Path) -> None:
    tmp = a.with_name(a.name + ".swap")
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)


@step
def alpha() -> str:
    return "alpha"


@step
def beta() -> str:
    return "beta"


@step
def swap_outputs() -> None:
    """The damage, done while the run goes: alpha's and beta's output folders exchange their contents."""
    steps = Client().get_pipeline_run("latest").steps
    _swap(Path(steps["alpha"].outputs["output"].uri), Path(steps["beta"].outputs["output"].uri))


@step
def consume(text: str) -> str:
    return text.upper()


def test_loading_a_swapped_artifact_folder_fails_naming_the_artifact() -> None:
    @pipeline(enable_cache=False)
    def produce():
        alpha()
        beta()

    run = produce()
    a, b = run.steps["alpha"].outputs["output"], run.steps["beta"].outputs["output"]
    _swap(Path(a.uri), Path(b.uri))  # each folder still matches its own manifest
    with pytest.raises(ArtifactCorruptedError, match=rf"artifact 'output' \(id {a.id}\) at .*alpha.* is not the "
                                                     "artifact recorded there.*swapped"):
        a.load()
    # a cache hit on them is refused too: both steps run again
    again = produce.with_options(enable_cache=True)()
    assert [again.steps[n].status for n in ("alpha", "beta")] == ["completed", "completed"]
    assert again.steps["alpha"].outputs["output"].load() == "alpha"


@pytest.mark.parametrize("where", ["in-process", "local step operator"])
def test_a_step_refuses_an_input_folder_swapped_with_another_artifacts(where: str) -> None:
    consumer = consume if where == "in-process" else consume.with_options(step_operator="local")

    @pipeline(enable_cache=False)
    def p():
        text = alpha()
        beta()
        swapped = swap_outputs(after=["alpha", "beta"])
        consumer(text, after=swapped)

    with pytest.raises(RunFailedError):
        p()
    failed = Client().get_pipeline_run("latest").steps["consume"]
    assert failed.status == "failed"
    assert "ArtifactCorruptedError: input 'text'" in failed.error and "not the artifact recorded" in failed.error


def test_cache_clear_through_the_cli(tmp_path: Path, conveyor_cli) -> None:
    log_a, log_b = str(tmp_path / "a"), str(tmp_path / "b")

    @pipeline(name="clearable")
    def p():
        touch_counter(log_a, 1, id="a")
        touch_counter(log_b, 2, id="b")

    first = p()
    assert {s.status for s in p().steps.values()} == {"cached"}

    assert "--pipeline" in conveyor_cli("cache", "clear", "--help").stdout
    refused = conveyor_cli("cache", "clear", check=False)
    assert refused.returncode == 1 and "--all" in refused.stderr
    unknown = conveyor_cli("cache", "clear", "--pipeline", "nope", "--yes", check=False)
    assert unknown.returncode == 1 and "no pipeline named 'nope'" in unknown.stderr

    declined = conveyor_cli("cache", "clear", "--pipeline", "clearable", "--step", "a", input="n\n")
    assert "Clear the cache of 1 completed step run(s)" in declined.stdout and "Nothing cleared" in declined.stdout
    assert p().steps["a"].status == "cached"

    conveyor_cli("cache", "clear", "--pipeline", "clearable", "--step", "a", input="y\n")
    run = p()
    assert (run.steps["a"].status, run.steps["b"].status) == ("completed", "cached")
    assert (executions(log_a), executions(log_b)) == (2, 1)

    cleared = conveyor_cli("cache", "clear", "--all", "--yes")
    assert "Cleared the cache of 2 completed step run(s)" in cleared.stdout
    run = p()
    assert (run.steps["a"].status, run.steps["b"].status) == ("completed", "completed")
    # nothing was deleted: the first run's records and outputs are all still there
    again = Client().get_pipeline_run(first.id)
    assert again.steps["a"].status == "completed" and again.steps["a"].outputs["output"].load() == 1
    assert "Nothing to clear" in conveyor_cli("cache", "clear", "--pipeline", "clearable", "--step", "zzz").stdout
