"""`log_metadata`: inside a step (in-process or on a step operator) it reaches the store through the launcher;
outside a step it takes explicit ids. Shown by the Client and `conveyor run describe`."""

from __future__ import annotations

import json
from typing import Annotated

import pytest

from conveyor import Client, log_metadata, pipeline, step


def _log() -> tuple[int, int]:
    log_metadata({"accuracy": 0.93, "classes": ["a", "b"]})
    log_metadata({"rows": 120}, artifact_name="features")
    log_metadata({"kind": "count"}, infer_artifact=True, artifact_name="n")
    return 120, 2


@step
def logs_here() -> tuple[Annotated[int, "features"], Annotated[int, "n"]]:
    return _log()


@step(step_operator="local")
def logs_remote() -> tuple[Annotated[int, "features"], Annotated[int, "n"]]:
    return _log()


@step
def plain() -> int:
    return 1


@pipeline(enable_cache=False)
def metadata_pipeline():
    logs_here()
    logs_remote()
    plain()


@pytest.mark.parametrize("name", ["logs_here", "logs_remote"])
def test_a_step_attaches_metadata_to_itself_and_to_its_outputs(name: str) -> None:
    run = metadata_pipeline()
    step_run = Client().get_pipeline_run(run.id).steps[name]
    assert step_run.run_metadata == {"accuracy": 0.93, "classes": ["a", "b"]}
    assert step_run.outputs["features"].run_metadata == {"rows": 120}
    assert step_run.outputs["n"].run_metadata == {"kind": "count"}
    assert run.steps["plain"].run_metadata == {}
    version = Client().get_artifact_version("features", step_run.outputs["features"].version)
    assert version.run_metadata == {"rows": 120}


def test_run_describe_shows_the_metadata(conveyor_cli) -> None:
    run = metadata_pipeline()
    out = conveyor_cli("run", "describe", run.name).stdout
    assert "Step 'logs_remote':" in out and "accuracy: 0.93" in out and "rows: 120" in out
    data = json.loads(conveyor_cli("run", "describe", run.name, "--output", "json").stdout)
    steps = {s["name"]: s for s in data["steps"]}
    assert steps["logs_here"]["run_metadata"]["accuracy"] == 0.93
    assert steps["logs_remote"]["outputs"]["features"]["run_metadata"] == {"rows": 120}


def test_outside_a_step_explicit_ids_write_to_the_store() -> None:
    run = metadata_pipeline()
    log_metadata({"reviewed": True}, step_name="plain", run_id_name_or_prefix=run.name)
    log_metadata({"owner": "ml-team"}, run_id_name_or_prefix=run.id[:8])
    log_metadata({"approved": "yes"}, artifact_name="features")  # the newest version
    features = run.steps["logs_remote"].outputs["features"]  # the later of this run's two versions
    log_metadata({"pinned": 1}, artifact_name="features", artifact_version=features.version)
    log_metadata({"by_id": 1}, artifact_version_id=run.steps["plain"].outputs["output"].id)
    again = Client().get_pipeline_run(run.id)
    assert again.steps["plain"].run_metadata == {"reviewed": True}
    assert again.run_metadata == {"owner": "ml-team"}
    assert again.steps["logs_remote"].outputs["features"].run_metadata == {"rows": 120, "approved": "yes", "pinned": 1}
    assert again.steps["plain"].outputs["output"].run_metadata == {"by_id": 1}


def test_a_key_logged_again_keeps_the_last_value() -> None:
    run = metadata_pipeline()
    log_metadata({"stage": "draft"}, run_id_name_or_prefix=run.name)
    log_metadata({"stage": "final"}, run_id_name_or_prefix=run.name)
    assert Client().get_pipeline_run(run.id).run_metadata == {"stage": "final"}


def test_values_must_be_json_and_targets_must_exist() -> None:
    with pytest.raises(TypeError, match=r"metadata 'model': a value of type object is not a JSON value"):
        log_metadata({"ok": 1, "model": object()}, run_id_name_or_prefix="whatever")
    with pytest.raises(ValueError, match="no pipeline run named or with id 'nope'"):
        log_metadata({"a": 1}, run_id_name_or_prefix="nope")
    with pytest.raises(ValueError, match="needs the run too"):
        log_metadata({"a": 1}, step_name="plain")
