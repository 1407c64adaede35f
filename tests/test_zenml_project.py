"""A typical ZenML project, ported by changing only its imports, runs as its user runs it.

`tests/zenml_project/` is laid out as ZenML projects are: `steps/` and `pipelines/` packages, `Annotated` outputs,
`log_metadata`, `get_step_context`, `save_artifact`, hooks, a YAML run config and a `run.py`. Each import that
names Conveyor carries the ZenML line it replaced; the first test checks that nothing else was changed for the
port. The training step goes to a registered step operator (`trainer`, flavor `local`: a real subprocess), so the
in-step API is shown on the remote side as well as in-process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TEMPLATE = Path(__file__).parent / "zenml_project"
RUN_NAME = re.compile(r"training_\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}_\d+")


def _code_files() -> list[Path]:
    return sorted(p for p in TEMPLATE.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_port_changed_only_imports() -> None:
    """Every line naming conveyor is an import whose ZenML original, renamed, is exactly that line."""
    ported = 0
    for path in _code_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "conveyor" not in line:
                continue
            code, sep, original = line.partition("  # zenml: ")
            assert sep, f"{path.name}:{number} names conveyor without the ZenML line it replaced: {line!r}"
            assert code.startswith(("from conveyor", "import conveyor")), f"{path.name}:{number} is not an import"
            assert code == original.replace("zenml", "conveyor"), f"{path.name}:{number}: {code!r} vs {original!r}"
            ported += 1
    assert ported >= 7


@pytest.fixture
def zenml_project(project: Path, conveyor_cli: Any) -> Path:
    shutil.copytree(TEMPLATE, project, dirs_exist_ok=True)
    conveyor_cli("step-operator", "register", "trainer", "--flavor=local")
    conveyor_cli("stack", "register", "zenml_like", "-o", "default", "-a", "default", "-s", "trainer")
    conveyor_cli("stack", "set", "zenml_like")
    return project


def _run(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOOK_LOG": str(project / "hooks.jsonl")}
    proc = subprocess.run([sys.executable, *args], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def _hook_events(project: Path) -> list[dict[str, Any]]:
    path = project / "hooks.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_project_runs_with_its_config_and_records_what_zenml_would(zenml_project: Path, conveyor_cli: Any) -> None:
    from conveyor.client import Client
    from conveyor.context import reset_contexts

    for _ in range(2):
        out = _run(zenml_project, "run.py").stdout
        assert "COMPLETED" in out and "NOT COMPLETED" not in out, out
    # the ZenML habit from the shell: the same pipeline by its source path, with the same config
    conveyor_cli("pipeline", "run", "pipelines.training.training_pipeline", "--config", "configs/training.yaml")
    reset_contexts()
    client = Client()

    runs = client.list_pipeline_runs("training_pipeline")
    assert len(runs) == 3
    for run in runs:
        assert RUN_NAME.fullmatch(run.name), run.name
    latest = client.get_pipeline_run(runs[0].name)
    steps = latest.steps
    assert list(steps) == ["load_data", "split_data", "train_model", "evaluate_model"]
    # the YAML's parameters reached the steps (the code's defaults are 100, 0, 0.2, 0.01, 200)
    assert steps["load_data"].config.parameters == {"n_rows": 60, "seed": 7}
    assert steps["train_model"].config.parameters["learning_rate"] == 0.1
    assert steps["train_model"].config.parameters["epochs"] == 300
    assert len(steps["split_data"].outputs["test_set"].load()) == 15

    # artifacts by the names their Annotated outputs give them, versioned across runs
    versions = client.list_artifact_versions("model")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3]
    model_version = client.get_artifact_version("model")
    assert int(model_version.version) == 3
    model = model_version.load()
    assert model["trained_in"]["run"] == latest.name
    assert model["trained_in"]["pipeline"] == "training_pipeline"
    assert model["trained_in"]["step"] == "train_model"
    assert model["trained_in"]["model_uri"] == steps["train_model"].outputs["model"].uri
    assert model["trained_in"]["pid"] != latest.pid, "the trainer step operator runs the step in its own process"
    assert abs(model["w"] - 3.0) < 0.2 and abs(model["b"] - 0.5) < 0.2
    assert int(client.get_artifact_version("model", version=1).version) == 1

    # metadata logged in the steps (in-process and remote) is on the step runs and on the artifact
    assert steps["load_data"].run_metadata["n_rows"] == 60
    assert steps["train_model"].run_metadata["learning_rate"] == 0.1
    assert model_version.run_metadata["w"] == pytest.approx(model["w"])
    mse = steps["evaluate_model"].outputs["test_mse"].load()
    assert steps["evaluate_model"].run_metadata["test_mse"] == pytest.approx(mse)

    # save_artifact inside a step, load_artifact outside
    from conveyor import load_artifact

    assert load_artifact("evaluation_report") == {"mse": pytest.approx(mse), "n": 15}
    assert len(client.list_artifact_versions("evaluation_report")) == 3

    # the pipeline's on_success hook ran for each step, where the step ran
    events = [e for e in _hook_events(zenml_project) if e["hook"] == "success"]
    assert sorted(e["step"] for e in events) == sorted(["load_data", "split_data", "train_model", "evaluate_model"] * 3)
    trained = [e for e in events if e["step"] == "train_model"]
    assert model["trained_in"]["pid"] in {e["pid"] for e in trained}

    listed = conveyor_cli("artifact", "list", "--output", "json").stdout
    assert {"model", "dataset", "train_set", "test_set", "test_mse", "evaluation_report"} <= {
        a["name"] for a in json.loads(listed)}
    described = conveyor_cli("artifact", "describe", "model:2").stdout
    assert "model" in described and "2" in described
    assert "learning_rate" in conveyor_cli("run", "describe", latest.name).stdout


def test_a_failing_step_calls_its_failure_hook_where_it_ran(zenml_project: Path) -> None:
    from conveyor.client import Client
    from conveyor.context import reset_contexts

    (zenml_project / "configs" / "bad.yaml").write_text(
        "run_name: bad_{date}_{time}\nsteps:\n  train_model:\n    parameters:\n      learning_rate: -1.0\n")
    proc = _run(zenml_project, "run.py", "configs/bad.yaml", check=False)
    assert proc.returncode != 0
    assert "learning_rate must be positive" in proc.stderr + proc.stdout
    failures = [e for e in _hook_events(zenml_project) if e["hook"] == "failure"]
    assert len(failures) == 1
    assert failures[0]["step"] == "train_model"
    assert "learning_rate must be positive, got -1.0" in failures[0]["error"]
    reset_contexts()
    run = Client().list_pipeline_runs("training_pipeline")[0]
    assert run.name.startswith("bad_") and run.status == "failed"
    assert failures[0]["pid"] != run.pid, "the failure hook runs where the step ran: the trainer's process"
