"""The `conveyor` command line, driven as a user drives it: the real executable, in subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

PIPELINE = '''
import os
import time

from conveyor import pipeline, step


@step
def load() -> int:
    print("loading the data")
    return 21


@step(step_operator="local")
def train(x: int) -> int:
    print(f"training on {x} in a separate process")
    # The step runs in its own process: it learns the mode from the environment the operator passes on.
    if os.environ.get("DEMO_MODE") == "fail":
        raise ValueError("bad data 42")
    if os.environ.get("DEMO_MODE") == "sleep":
        print("sleeping", flush=True)
        time.sleep(60)
    return x * 2


@step
def evaluate(model: int) -> int:
    print(f"model is {model}")
    return model


@pipeline(enable_cache=False)
def {name}():
    evaluate(train(load()))


if __name__ == "__main__":
    {name}()
'''


def write_pipeline(project: Path, name: str) -> Path:
    path = project / f"{name}.py"
    path.write_text(textwrap.dedent(PIPELINE).replace("{name}", name))
    return path


def start_script(project: Path, script: Path, mode: str = "", **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(script)], cwd=project, text=True,
                            env={**os.environ, "DEMO_MODE": mode}, **kwargs)


def run_script(project: Path, script: Path, mode: str = "") -> subprocess.CompletedProcess[str]:
    proc = start_script(project, script, mode, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def assert_user_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit status 1, one line starting `Error:` that says what to do, no traceback."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def rows(output: str) -> dict[str, list[str]]:
    """First column -> cells, from a rich table printed without a terminal."""
    out = {}
    for line in output.splitlines():
        cells = [c for c in line.strip().split("  ") if c.strip()]
        if cells:
            out[cells[0].strip()] = [c.strip() for c in cells]
    return out


# -- basics ------------------------------------------------------------------------------------------------
def test_help_lists_every_group_with_examples(conveyor_cli) -> None:
    out = conveyor_cli("--help").stdout
    for group in ("init", "stack", "step-operator", "orchestrator", "artifact-store", "run"):
        assert group in out
    assert "Examples:" in out
    sub = conveyor_cli("step-operator", "register", "--help").stdout
    assert "--flavor" in sub and "--pending_timeout=10m" in sub


def test_init_creates_the_project_and_reports_it(conveyor_cli, project: Path) -> None:
    first = conveyor_cli("init")
    assert (project / ".conveyor").is_dir()
    assert "Initialised a Conveyor project" in first.stdout
    assert rows(first.stdout)["*"][1:] == ["default", "default", "default", "local"]
    again = conveyor_cli("init")
    assert "already initialised" in again.stdout


def test_default_stack_and_components_are_listed(conveyor_cli, project: Path) -> None:
    stacks = rows(conveyor_cli("stack", "list").stdout)
    assert stacks["*"][1:] == ["default", "default", "default", "local"]
    assert rows(conveyor_cli("step-operator", "list").stdout)["local"][:4] == ["local", "local", "(defaults)", "default"]
    store = rows(conveyor_cli("artifact-store", "list").stdout)["default"]
    assert f"path={project / '.conveyor' / 'artifacts'}" in store
    described = conveyor_cli("stack", "describe").stdout
    assert "Stack 'default' (active)" in described and "step operator (default)" in described


# -- components --------------------------------------------------------------------------------------------
def _config(name: str) -> dict[str, Any] | None:
    from conveyor.context import get_context

    record = get_context().store.get_component("step_operator", name)
    return None if record is None else record["config"]


def test_step_operator_register_list_describe_update_delete(conveyor_cli) -> None:
    out = conveyor_cli("step-operator", "register", "gpu", "--flavor=local", "--pending_timeout=10m").stdout
    assert "Registered step operator 'gpu'" in out
    assert _config("gpu") == {"pending_timeout": 600.0}
    assert rows(conveyor_cli("step-operator", "list").stdout)["gpu"][:3] == ["gpu", "local", "pending_timeout=600.0"]

    # `--field value` works as well as `--field=value`; fields merge and are re-validated.
    conveyor_cli("step-operator", "update", "gpu", "--infrastructure_retries", "5", "--memory_enforcement=rlimit")
    assert _config("gpu") == {"pending_timeout": 600.0, "infrastructure_retries": 5, "memory_enforcement": "rlimit"}
    described = conveyor_cli("step-operator", "describe", "gpu").stdout
    assert "flavor: local (builtin)" in described and "stacks: (none)" in described
    fields = rows(described)
    assert fields["pending_timeout"][1] == "600.0" and fields["infrastructure_retries"][1] == "5"
    assert fields["python"][1:3] == ["-", "(default)"]

    assert_user_error(conveyor_cli("step-operator", "update", "gpu", "--memory_enforcement=sometimes", check=False),
                      "memory_enforcement", "Valid fields")
    assert _config("gpu") == {"pending_timeout": 600.0, "infrastructure_retries": 5, "memory_enforcement": "rlimit"}

    assert "Deleted step operator 'gpu'" in conveyor_cli("step-operator", "delete", "gpu").stdout
    assert _config("gpu") is None


def test_component_user_errors_leave_the_store_unchanged(conveyor_cli) -> None:
    conveyor_cli("step-operator", "register", "gpu", "--flavor=local")
    before = conveyor_cli("step-operator", "list").stdout

    bad = conveyor_cli("step-operator", "register", "gpu2", "--flavor=local", "--pending_timout=10m", check=False)
    assert_user_error(bad, "unknown field 'pending_timout'", "did you mean 'pending_timeout'",
                      "Valid fields of LocalStepOperatorConfig: pending_timeout, infrastructure_retries, python")
    assert_user_error(conveyor_cli("step-operator", "register", "gpu2", "--flavor=local", "--pending_timeout=soon",
                                   check=False), "pending_timeout")
    assert_user_error(conveyor_cli("step-operator", "register", "gpu2", "--flavor=slurmm", check=False),
                      "unknown step-operator flavor 'slurmm'", "Known flavors: ", "fault, ", "local, ", "flavor register")
    assert_user_error(conveyor_cli("step-operator", "register", "gpu", "--flavor=local", check=False),
                      "already exists", "conveyor step-operator update gpu")
    assert_user_error(conveyor_cli("step-operator", "describe", "nope", check=False),
                      "no step operator named 'nope'", "gpu, local")
    assert_user_error(conveyor_cli("step-operator", "delete", "local", check=False),
                      "used by stack(s) default", "--remove-step-operator local")
    assert conveyor_cli("step-operator", "list").stdout == before


def test_flavor_list_and_custom_flavor_register(conveyor_cli, project: Path) -> None:
    flavors = rows(conveyor_cli("step-operator", "flavor", "list").stdout)
    assert flavors["local"][1] == "builtin" and flavors["fault"][1] == "builtin"
    assert "injects" in flavors["fault"][2]

    (project / "my_pkg").mkdir()
    (project / "my_pkg" / "__init__.py").write_text("")
    (project / "my_pkg" / "flavors.py").write_text(textwrap.dedent('''
        import subprocess
        from conveyor.step_operators import BaseStepOperator, BaseStepOperatorConfig, BaseStepOperatorFlavor

        class MyConfig(BaseStepOperatorConfig):
            greeting: str = "hi"

        class MyOperator(BaseStepOperator):
            def launch(self, info, entrypoint_command, environment):
                subprocess.run(entrypoint_command, check=True)

        class MyFlavor(BaseStepOperatorFlavor):
            """Runs the step with subprocess."""
            name = "my_custom"

            @property
            def config_class(self):
                return MyConfig

            @property
            def implementation_class(self):
                return MyOperator
    '''))
    assert "Registered step operator flavor 'my_custom'" in conveyor_cli(
        "step-operator", "flavor", "register", "my_pkg.flavors.MyFlavor").stdout
    assert rows(conveyor_cli("step-operator", "flavor", "list").stdout)["my_custom"][1:3] == [
        "custom", "Runs the step with subprocess."]
    conveyor_cli("step-operator", "register", "mine", "--flavor=my_custom", "--greeting=hello")
    assert _config("mine") == {"greeting": "hello"}
    assert_user_error(conveyor_cli("orchestrator", "flavor", "register", "my_pkg.flavors.MyFlavor", check=False),
                      "conveyor step-operator flavor register my_pkg.flavors.MyFlavor")


# -- stacks ------------------------------------------------------------------------------------------------
def test_stack_register_update_set_describe_delete(conveyor_cli) -> None:
    conveyor_cli("step-operator", "register", "flaky", "--flavor=fault", "--fault=mid_run")
    conveyor_cli("stack", "register", "prod", "-o", "default", "-a", "default", "-s", "local")
    before = conveyor_cli("stack", "list").stdout
    assert rows(before)["prod"][1:] == ["default", "default", "local"]

    assert_user_error(conveyor_cli("stack", "register", "prod", "-o", "default", "-a", "default", check=False),
                      "already exists")
    assert_user_error(conveyor_cli("stack", "register", "p2", "-o", "default", "-a", "default", "-s", "tpu",
                                   check=False), "no step operator named 'tpu'", "conveyor step-operator register tpu")
    assert_user_error(conveyor_cli("stack", "update", "prod", "-s", "tpu", check=False), "no step operator named 'tpu'")
    assert_user_error(conveyor_cli("stack", "set", "nope", check=False), "no stack named 'nope'", "default, prod")
    assert conveyor_cli("stack", "list").stdout == before

    conveyor_cli("stack", "update", "prod", "-s", "flaky")
    described = rows(conveyor_cli("stack", "describe", "prod").stdout)
    assert described["step operator (default)"][1] == "local"
    assert described["step operator"][1:4] == ["flaky", "fault", "fault=mid_run"]
    conveyor_cli("stack", "update", "prod", "--remove-step-operator", "local")

    conveyor_cli("stack", "set", "prod")
    listed = rows(conveyor_cli("stack", "list").stdout)
    assert listed["*"][1:] == ["prod", "default", "default", "flaky"]

    assert_user_error(conveyor_cli("stack", "delete", "prod", check=False),
                      "'prod' is the active stack", "conveyor stack set default")
    conveyor_cli("stack", "set", "default")
    conveyor_cli("stack", "delete", "prod")
    assert rows(conveyor_cli("stack", "list").stdout).keys() == {"active", "*"} | {
        k for k in rows(before) if k.startswith("─")}


# -- runs --------------------------------------------------------------------------------------------------
def test_run_list_describe_logs(conveyor_cli, project: Path) -> None:
    script = write_pipeline(project, "demo_pipeline")
    ok = run_script(project, script)
    assert ok.returncode == 0, ok.stderr
    failed = run_script(project, script, "fail")
    assert failed.returncode != 0

    listed = conveyor_cli("run", "list").stdout
    runs = [ln.split()[0] for ln in listed.splitlines() if ln.startswith("demo_pipeline-")]
    assert len(runs) == 2
    bad_run, good_run = runs  # newest first
    assert rows(listed)[good_run][3] == "completed" and rows(listed)[bad_run][3] == "failed"
    only_failed = conveyor_cli("run", "list", "--status", "failed", "--pipeline", "demo_pipeline").stdout
    assert bad_run in only_failed and good_run not in only_failed
    assert len([ln for ln in conveyor_cli("run", "list", "-n", "1").stdout.splitlines() if "demo_pipeline-" in ln]) == 1

    good = rows(conveyor_cli("run", "describe", good_run).stdout)
    assert good["load"][1:3] == ["completed", "in-process"]
    assert good["train"][1:3] == ["completed", "local (local)"]
    assert good["train"][4] == "1"  # attempt
    assert good["evaluate"][1] == "completed"

    bad_out = conveyor_cli("run", "describe", bad_run).stdout
    bad = rows(bad_out)
    assert bad["train"][1:3] == ["failed", "local (local)"] and "ValueError: bad data 42" in bad["train"][-1]
    assert bad["evaluate"][1] == "skipped"
    assert "Traceback of the step:" in bad_out and 'raise ValueError("bad data 42")' in bad_out

    logs = conveyor_cli("run", "logs", good_run, "train").stdout
    assert logs.strip() == "training on 21 in a separate process"
    every = conveyor_cli("run", "logs", good_run).stdout
    assert "==> load (completed, in-process) <==" in every and "loading the data" in every
    assert every.index("==> train") < every.index("training on 21") < every.index("==> evaluate") < every.index("model is 42")
    # a deadline, not a speed bound: --follow on an ended step returns by itself (a loaded CI machine took >10 s)
    followed = conveyor_cli("run", "logs", bad_run, "train", "--follow", timeout=120).stdout
    assert "bad data 42" in followed  # an ended step: prints what is stored and returns

    assert_user_error(conveyor_cli("run", "describe", "no-such-run", check=False), "conveyor run list")
    assert_user_error(conveyor_cli("run", "logs", good_run, "nope", check=False), "load, train, evaluate")
    assert "already completed" in conveyor_cli("run", "stop", good_run).stdout


def _wait_for_running_step(project: Path, pipeline: str, step: str, timeout: float = 120) -> tuple[str, dict]:
    """(run name, step run row) once the step's backend job has started."""
    from conveyor.context import get_context

    store = get_context().store
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in store.list_runs(pipeline=pipeline):
            for s in store.step_runs(run["id"]):
                if s["name"] == step and s["status"] == "running" and (s["submission"] or {}).get("data", {}).get("pid"):
                    return run["name"], s
        time.sleep(0.1)
    raise AssertionError(f"step {step!r} of {pipeline!r} never started")


def _wait_no_process(marker: str, timeout: float = 60) -> list[int]:
    from conveyor.utils.procs import pids_with_marker

    deadline = time.monotonic() + timeout
    while (pids := pids_with_marker(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return pids


def test_run_stop_from_another_process(conveyor_cli, project: Path) -> None:
    conveyor_cli("init")  # the store exists before this process and the pipeline open it together
    script = write_pipeline(project, "sleepy_pipeline")
    pipeline = start_script(project, script, "sleep", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    follower = None
    try:
        run_name, step = _wait_for_running_step(project, "sleepy_pipeline", "train")
        assert rows(conveyor_cli("run", "list").stdout)[run_name][3] == "running"
        exe = Path(sys.executable).with_name("conveyor")
        follower = subprocess.Popen([str(exe), "run", "logs", run_name, "train", "--follow"], cwd=project,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        started = time.monotonic()
        stopped = conveyor_cli("run", "stop", run_name, timeout=30)
        # the step sleeps 60 s: a stop that waited for it to end would take twice this (a loaded machine is slow)
        assert time.monotonic() - started < 30
        assert f"Run {run_name} is stopped." in stopped.stdout
        pipeline.wait(timeout=15)
        assert _wait_no_process(step["id"]) == []
        describe_out = conveyor_cli("run", "describe", run_name).stdout
        assert "status: stopped" in describe_out
        described = rows(describe_out)
        assert described["train"][1] == "stopped" and described["load"][1] == "completed"
        assert described["evaluate"][1] == "stopped"

        # `logs --follow` ends by itself once the step has ended, with what the step printed.
        out, _ = follower.communicate(timeout=120)
        assert "training on 21" in out and "sleeping" in out
    finally:
        for proc in (pipeline, follower):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def test_abandoned_run_is_shown_and_stop_cleans_it_up(conveyor_cli, project: Path) -> None:
    conveyor_cli("init")
    script = write_pipeline(project, "orphan_pipeline")
    pipeline = start_script(project, script, "sleep", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run_name, step = _wait_for_running_step(project, "orphan_pipeline", "train")
    finally:
        pipeline.send_signal(signal.SIGKILL)  # the orchestrator dies; its step's process group lives on
        pipeline.wait()
    from conveyor.utils.procs import pids_with_marker

    assert pids_with_marker(step["id"]), "the orphaned step should still be running"
    assert rows(conveyor_cli("run", "list").stdout)[run_name][3] == "abandoned"
    assert run_name in conveyor_cli("run", "list", "--status", "abandoned").stdout

    started = time.monotonic()
    out = conveyor_cli("run", "stop", run_name, timeout=30).stdout
    # the step sleeps 60 s: a stop that waited for it to end would take twice this (a loaded machine is slow)
    assert time.monotonic() - started < 30
    assert "cancelled job" in out and f"Run {run_name} is stopped." in out
    assert _wait_no_process(step["id"]) == []
    described = rows(conveyor_cli("run", "describe", run_name).stdout)
    assert described["train"][1] == "stopped" and described["evaluate"][1] == "stopped"
