"""`conveyor pipeline run | list`, `conveyor run delete`, and the Client's pipeline methods, through real processes."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from conveyor import Client

# A script as users write it: the pipeline is called at module level, no `if __name__ == "__main__":`. Each
# execution of that call would append to runs.txt; importing it for `conveyor pipeline run` must not.
SCRIPT = '''
from pathlib import Path

from conveyor import pipeline, step


@step
def load(n: int, scale: float = 1.0) -> list[float]:
    return [i * scale for i in range(n)]


@step
def total(xs: list[float]) -> float:
    if not xs:
        raise ValueError("nothing to add up")
    return sum(xs)


@pipeline
def training(n: int = 2) -> None:
    total(load(n))


with Path("module-level-calls.txt").open("a") as fh:
    fh.write("called\\n")
training()
'''


@pytest.fixture
def project_script(project: Path) -> Path:
    (project / "pipelines").mkdir()
    (project / "pipelines" / "__init__.py").write_text("")
    (project / "pipelines" / "training.py").write_text(SCRIPT)
    (project / "run.yaml").write_text(textwrap.dedent("""
        run_name: from_cli_{date}_{time}
        parameters: {n: 4}
        steps:
          load:
            parameters: {scale: 0.5}
    """))
    return project


def test_pipeline_run_takes_each_source_form_and_the_run_config(conveyor_cli, project_script: Path) -> None:
    out = conveyor_cli("pipeline", "run", "pipelines.training.training", "--config", "run.yaml").stdout
    assert "of pipeline training is completed" in out
    # the module's top level ran once (up to its pipeline call), and the call itself did not run a second pipeline
    assert (project_script / "module-level-calls.txt").read_text() == "called\n"
    runs = Client().list_pipeline_runs("training")
    assert len(runs) == 1 and runs[0].name.startswith("from_cli_")
    run = Client().get_pipeline_run(runs[0].id)
    assert run.steps["load"].config.parameters == {"n": 4, "scale": 0.5}
    assert run.steps["total"].outputs["output"].load() == 3.0

    conveyor_cli("pipeline", "run", "pipelines.training:training")
    conveyor_cli("pipeline", "run", "pipelines/training.py:training", "-c", "run.yaml")
    assert len(Client().list_pipeline_runs("training")) == 3


def test_pipeline_run_fails_with_a_non_zero_exit_and_a_clear_message(conveyor_cli, project_script: Path) -> None:
    (project_script / "empty.yaml").write_text("parameters: {n: 0}\n")
    failed = conveyor_cli("pipeline", "run", "pipelines.training.training", "-c", "empty.yaml", check=False)
    assert failed.returncode == 1
    assert "step 'total' failed" in failed.stderr and "nothing to add up" in failed.stderr

    missing = conveyor_cli("pipeline", "run", "pipelines.training.nope", check=False)
    assert missing.returncode == 1 and "module 'pipelines.training' has no 'nope'" in missing.stderr
    not_a_pipeline = conveyor_cli("pipeline", "run", "pipelines.training:load", check=False)
    assert not_a_pipeline.returncode == 1 and "names a Step, not a @pipeline" in not_a_pipeline.stderr
    bad_key = conveyor_cli("pipeline", "run", "pipelines.training:training", "-c", "bad.yaml", check=False)
    assert bad_key.returncode == 1 and "run config 'bad.yaml' does not exist" in bad_key.stderr


def test_pipeline_list_and_the_clients_pipeline_views(conveyor_cli, project_script: Path) -> None:
    assert "No pipelines yet" in conveyor_cli("pipeline", "list").stdout
    conveyor_cli("pipeline", "run", "pipelines.training.training")
    (project_script / "empty.yaml").write_text("parameters: {n: 0}\nrun_name: the_failed_one\n")
    conveyor_cli("pipeline", "run", "pipelines.training.training", "-c", "empty.yaml", check=False)

    listed = json.loads(conveyor_cli("pipeline", "list", "--output", "json").stdout)
    assert [(p["name"], p["runs"], p["last_run"], p["last_status"]) for p in listed] == [
        ("training", 2, "the_failed_one", "failed")]
    table = conveyor_cli("pipeline", "list").stdout
    assert "training" in table and "the_failed_one" in table and "failed" in table

    client = Client()
    [view] = client.list_pipelines()
    pipeline = client.get_pipeline("training")
    assert view.name == pipeline.name == "training"
    assert [r.name for r in pipeline.runs][0] == "the_failed_one" and len(pipeline.runs) == 2
    assert pipeline.last_run.name == "the_failed_one" and pipeline.last_run.steps["total"].status == "failed"
    assert pipeline.last_successful_run.status == "completed"
    with pytest.raises(Exception, match="no pipeline named 'trainin'"):
        client.get_pipeline("trainin")


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_run_delete_removes_records_and_with_artifacts_only_what_no_other_run_uses(conveyor_cli, project_script: Path) -> None:
    conveyor_cli("pipeline", "run", "pipelines.training.training", "-c", "run.yaml")  # produces the artifacts
    conveyor_cli("pipeline", "run", "pipelines.training.training", "-c", "run.yaml")  # all cache hits
    first, second = sorted(Client().list_pipeline_runs("training"), key=lambda r: r.start_time)
    first = Client().get_pipeline_run(first.id)
    assert {s.status for s in Client().get_pipeline_run(second.id).steps.values()} == {"cached"}
    store_root = Path(Client().active_stack.artifact_store.artifact_store().root)
    first_dir = store_root / "runs" / first.id
    assert first_dir.is_dir()

    # the producer first: its artifacts stay, a later run's cache hits use them
    out = conveyor_cli("run", "delete", first.name, "--artifacts", "-y")
    assert f"Deleted run {first.name}." in out.stdout
    assert out.stderr.count(f"run(s) {second.name} still use it") == 2
    assert {r.id for r in Client().list_pipeline_runs()} == {second.id}
    assert Client().get_pipeline_run(second.id).steps["total"].outputs["output"].load() == 3.0
    assert all(Path(a.uri).exists() for a in first.steps["load"].outputs.values())

    # then the cache-hit run: now nothing else uses them, so they go with it, files too
    out = conveyor_cli("run", "delete", second.name, "--artifacts", "-y")
    assert "Deleted 2 artifact(s)." in out.stdout
    assert Client().list_pipeline_runs() == [] and not any(Path(a.uri).exists() for a in first.steps["load"].outputs.values())
    with pytest.raises(Exception, match="no pipeline run"):
        Client().get_pipeline_run(second.id)
    # nor can a step find them by name any more: the artifact store's name index forgot them with the records
    index = store_root / "artifact_index"
    gone = [a.id for a in first.steps["load"].outputs.values()]
    assert gone and not any((index / "ids" / f"{i}.json").exists() for i in gone)
    assert not any(index.rglob("*.json")), sorted(index.rglob("*.json"))


def test_run_delete_without_artifacts_keeps_the_files_and_asks_first(conveyor_cli, project_script: Path) -> None:
    conveyor_cli("pipeline", "run", "pipelines.training.training")
    [run] = Client().list_pipeline_runs()
    before = _files(project_script / ".conveyor" / "artifacts") if (project_script / ".conveyor").exists() else None
    declined = conveyor_cli("run", "delete", run.name, input="n\n", check=False)
    assert declined.returncode == 1 and len(Client().list_pipeline_runs()) == 1
    conveyor_cli("run", "delete", run.name, input="y\n")
    assert Client().list_pipeline_runs() == []
    if before is not None:
        assert _files(project_script / ".conveyor" / "artifacts") == before


def test_a_run_still_owned_by_a_live_process_is_not_deleted(conveyor_cli, project_script: Path) -> None:
    from conveyor.context import get_context
    from conveyor.execution.lease import RunLease

    conveyor_cli("pipeline", "run", "pipelines.training.training")
    [run] = Client().list_pipeline_runs()
    store = get_context().store
    store.update_run(run.id, status="running")
    with RunLease(store, run.id):  # this test process now owns the run, as its orchestrator would
        refused = conveyor_cli("run", "delete", run.name, "-y", check=False)
        assert refused.returncode == 1
        assert f"run {run.name} is still running" in refused.stderr
        assert f"`conveyor run stop {run.name}`" in refused.stderr
        assert len(Client().list_pipeline_runs()) == 1
    # its owner gone (the lease released), the abandoned run can be deleted, from Python too
    deleted = Client().delete_pipeline_run(run.name)
    assert deleted.run_name == run.name and Client().list_pipeline_runs() == []
    assert os.environ.get("CONVEYOR_STEP_PROCESS") is None
