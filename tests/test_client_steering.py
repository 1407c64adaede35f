"""The Client steers runs and manages components from Python, as the CLI does: a script in another process runs
the pipeline, the test stops, follows and resumes it through `Client()`; components registered through the Client
are what `conveyor <type> describe --output json` shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

PIPELINE = '''
import os
import time

from conveyor import pipeline, step


@step
def load() -> int:
    return 21


@step(step_operator="local")
def train(x: int) -> int:
    print(f"training on {x}", flush=True)
    if os.environ.get("STEER_MODE") == "sleep":  # the orchestrator's environment: not the resuming test's
        print("sleeping", flush=True)
        time.sleep(120)
    return x * 2


@step
def evaluate(model: int) -> int:
    return model


@pipeline(enable_cache=False)
def steered():
    evaluate(train(load()))


if __name__ == "__main__":
    steered()
'''


def _running_step(step: str, timeout: float = 120) -> tuple[str, dict[str, Any]]:
    """(run name, step run row) once the step's process has started."""
    from conveyor.context import get_context

    store = get_context().store
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in store.list_runs(pipeline="steered"):
            for s in store.step_runs(run["id"]):
                if s["name"] == step and s["status"] == "running" and (s["submission"] or {}).get("data", {}).get("pid"):
                    return run["name"], s
        time.sleep(0.1)
    raise AssertionError(f"step {step!r} never started")


def test_client_stops_a_run_another_process_runs_follows_its_log_and_resumes_it(conveyor_cli, project: Path) -> None:
    from testkit import wait_until

    from conveyor import Client
    from conveyor.exceptions import ConveyorError
    from conveyor.utils.procs import pids_with_marker

    conveyor_cli("init")
    script = project / "steered.py"
    script.write_text(textwrap.dedent(PIPELINE))
    orchestrator = subprocess.Popen([sys.executable, str(script)], cwd=project, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, env={**os.environ, "STEER_MODE": "sleep"})
    try:
        run_name, step = _running_step("train")
        client = Client()
        assert pids_with_marker(step["id"]), "the step's process should be running"

        followed: list[str] = []
        follower = threading.Thread(target=lambda: followed.extend(client.follow_logs(run_name, "train")))
        follower.start()
        with pytest.raises(ConveyorError, match="has no step 'nope'; its steps: load, train, evaluate"):
            list(client.follow_logs(run_name, "nope"))

        heard: list[str] = []
        stopped = client.stop_run(run_name, wait_s=60, on_message=heard.append)
        assert stopped.requested and stopped.status == "stopped" and stopped.run_name == run_name
        view = client.get_pipeline_run(run_name)
        assert view.status == "stopped" and view.steps["train"].status == "stopped"
        assert view.steps["load"].status == "completed"
        orchestrator.wait(timeout=60)
        wait_until(lambda: not pids_with_marker(step["id"]), timeout=60, what="the step's process to end")

        follower.join(timeout=120)
        assert not follower.is_alive(), "follow_logs did not end with its step"
        assert "training on 21" in "".join(followed) and "sleeping" in "".join(followed)

        again = client.stop_run(run_name)
        assert not again.requested and again.status_before == "stopped"

        resumed = client.resume_run(run_name[:-2])  # a unique prefix names the run, as everywhere
        assert resumed.name == run_name and resumed.status == "completed"
        assert resumed.steps["load"].attempt == 1  # done before: not run again
        assert resumed.steps["evaluate"].outputs["output"].load() == 42
    finally:
        if orchestrator.poll() is None:
            orchestrator.kill()
            orchestrator.wait()


def _described(conveyor_cli: Any, name: str) -> dict[str, Any]:
    return json.loads(conveyor_cli("step-operator", "describe", name, "--output", "json").stdout)


def test_components_managed_through_the_client_are_what_the_cli_shows(conveyor_cli, project: Path) -> None:
    from conveyor import Client
    from conveyor.exceptions import ConfigError, ConveyorError

    conveyor_cli("init")
    client = Client()
    saved = client.register_component("step_operator", "gpu", "local", pending_timeout="10m")
    assert saved.config == {"pending_timeout": 600.0}
    shown = _described(conveyor_cli, "gpu")
    assert (shown["id"], shown["flavor"], shown["configuration"]) == (saved.id, "local", {"pending_timeout": 600.0})

    with pytest.raises(ConveyorError, match="already exists"):
        client.register_component("step_operator", "gpu", "local")
    with pytest.raises(ConfigError, match="did you mean 'pending_timeout'"):
        client.update_component("step_operator", "gpu", pending_timout="1h")
    client.update_component("step_operator", "gpu", pending_timeout="1h")
    assert _described(conveyor_cli, "gpu")["configuration"] == {"pending_timeout": 3600.0}

    copy = client.copy_component("step_operator", "gpu", "gpu2")
    assert _described(conveyor_cli, "gpu2")["configuration"] == {"pending_timeout": 3600.0}
    assert copy.id != saved.id

    conveyor_cli("stack", "update", "default", "-s", "gpu")
    with pytest.raises(ConveyorError, match="conveyor stack update default --remove-step-operator gpu"):
        client.delete_component("step_operator", "gpu")
    client.delete_component("step_operator", "gpu2")
    gone = conveyor_cli("step-operator", "describe", "gpu2", check=False)
    assert gone.returncode == 1 and "no step operator named 'gpu2'" in gone.stderr
