"""The typed values both sides of a step pass around (JobSpec, StepResult, ArtifactRef) and the one owner of the
attempt folder's layout: files written by the previous version still read, and what a run writes reads back."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from steps_lib import make_numbers, remote_sum

from conveyor import Client, pipeline
from conveyor.artifacts.layout import AttemptLayout
from conveyor.config import ResourceSettings
from conveyor.enums import FailureKind, StepStatus
from conveyor.execution.jobspec import ArtifactRef, JobSpec, JobSpecError, OutputSlot, StepError, StepResult

#: a job spec exactly as the launcher of the previous version wrote it (launcher.job_spec() returned this dict)
OLD_JOB_SPEC = {
    "version": 1, "run_id": "r1", "run_name": "train-1", "pipeline": "train", "step_name": "fit", "step_run_id": "s1",
    "attempt": 2, "source": {"module": "steps", "attr": "fit", "code_root": "/code"}, "parameters": {"lr": 0.1},
    "inputs": {"data": {"uri": "/store/runs/r1/steps/load/attempt-1/outputs/output", "materializer": "m.Pickle",
                        "data_type": "builtins:list", "checksum": "abc"}},
    "outputs": {"model": {"uri": "/store/runs/r1/steps/fit/attempt-2/outputs/model", "type": "builtins:dict"}},
    "settings": {"resources": {"cpu_count": 1}}, "artifact_names": {"model": "fit_model"},
    "hooks": {"on_failure": {"module": "hooks", "attr": "alert"}}, "resources": {"cpu_count": 1},
    "artifact_store": {"root": "/store", "storage_options": {}},
    "result_uri": "/store/runs/r1/steps/fit/attempt-2/result.json", "log_uri": "/store/runs/r1/steps/fit/attempt-2/logs.txt",
}


def test_an_old_job_spec_reads_and_writes_back_with_the_same_keys() -> None:
    spec = JobSpec.parse(json.dumps(OLD_JOB_SPEC).encode(), "job.json")
    assert spec.inputs["data"] == ArtifactRef(OLD_JOB_SPEC["inputs"]["data"]["uri"], "m.Pickle", "builtins:list", "abc")
    assert spec.outputs["model"] == OutputSlot(OLD_JOB_SPEC["outputs"]["model"]["uri"], "builtins:dict")
    assert (spec.artifact_store_root, spec.attempt, spec.log_uri) == ("/store", 2, OLD_JOB_SPEC["log_uri"])
    assert spec.attempt_uri == "/store/runs/r1/steps/fit/attempt-2"
    assert spec.to_json() == OLD_JOB_SPEC


def test_a_job_spec_without_the_optional_keys_reads_with_defaults() -> None:
    optional = ("run_name", "pipeline", "settings", "artifact_names", "hooks", "resources", "log_uri")
    spec = JobSpec.parse(json.dumps({k: v for k, v in OLD_JOB_SPEC.items() if k not in optional}), "job.json")
    assert (spec.run_name, spec.pipeline, spec.hooks, spec.resources, spec.log_uri) == ("", "", {}, {}, None)


def test_a_damaged_input_entry_is_a_job_spec_error_not_a_crash() -> None:
    damaged = {**OLD_JOB_SPEC, "inputs": {"data": {"uri": "/x"}}}
    with pytest.raises(JobSpecError, match="damaged input or output entry"):
        JobSpec.parse(json.dumps(damaged), "job.json")


def test_job_spec_round_trip() -> None:
    spec = JobSpec(run_id="r", step_name="s", step_run_id="id", attempt=1, source={"module": "m", "attr": "f"},
                   parameters={}, inputs={"x": ArtifactRef("s3://b/x", "m.P", "builtins:int", "c1")},
                   outputs={"y": OutputSlot("s3://b/y", "typing:Any")}, artifact_store_root="s3://b",
                   result_uri="s3://b/runs/r/steps/s/attempt-1/result.json", storage_options={"anon": False})
    assert JobSpec.parse(json.dumps(spec.to_json()), "job.json") == spec


def test_step_result_round_trip_completed_and_failed() -> None:
    done = StepResult(StepStatus.COMPLETED, {"y": ArtifactRef("/s/y", "m.P", "builtins:int", "c", 12)}, step_name="s",
                      attempt=1, recorded={"metadata": [], "saved": []}, timings={"start": 1.0, "end": 2.0, "duration": 1.0},
                      peak_memory_bytes=1024)
    failed = StepResult(StepStatus.FAILED, error=StepError("ValueError", "bad", FailureKind.USER, "Traceback ..."),
                        step_name="s", attempt=3)
    for result in (done, failed):
        assert StepResult.parse(json.dumps(result.to_json()), "result.json") == result
    assert "outputs" not in failed.to_json() and "error" not in done.to_json()


def test_an_old_result_reads() -> None:
    """The remote side of the previous version wrote outputs without their URI, and an unrunnable job only
    version, status and error."""
    old = {"version": 1, "step_name": "s", "attempt": 1, "status": "completed",
           "outputs": {"y": {"materializer": "m.P", "data_type": "builtins:int", "size": 3, "checksum": "c"}},
           "timings": {"start": 1.0, "end": 2.0, "duration": 1.0}, "peak_memory_bytes": 10}
    result = StepResult.parse(json.dumps(old), "result.json")
    assert result.status == "completed" and result.error is None
    assert result.outputs["y"].recorded("id1", "s_y", "/store/y") == ArtifactRef("/store/y", "m.P", "builtins:int", "c",
                                                                                  3, "id1", "s_y")
    unrunnable = {"version": 1, "status": "failed",
                  "error": {"type": "JobSpecError", "message": "lacks run_id", "kind": "job_spec", "traceback": "T"}}
    result = StepResult.parse(json.dumps(unrunnable), "result.json")
    assert result.error == StepError("JobSpecError", "lacks run_id", FailureKind.JOB_SPEC, "T")
    assert result.to_json() == unrunnable


def test_artifact_ref_from_a_store_row_with_more_columns() -> None:
    row = {"id": "a1", "uri": "/s/a", "materializer": "m", "data_type": "t", "checksum": "c", "size": 5, "name": "n",
           "version": "2", "created": "then", "producer_step_run_id": "sr"}
    ref = ArtifactRef.from_json(row)
    assert ref == ArtifactRef("/s/a", "m", "t", "c", 5, "a1", "n")
    assert ArtifactRef.from_json(ref.to_json()) == ref


# -- the attempt folder ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("root", ["/data/store", "s3://bucket/prefix", "gs://b", "/srv/runs/x"])
def test_attempt_layout_parse_inverts_build(root: str) -> None:
    layout = AttemptLayout(root, "run-1", "train", 3)
    assert AttemptLayout.parse(layout.uri) == layout
    assert AttemptLayout.parse(layout.uri + "/") == layout
    assert layout.job == f"{root}/runs/run-1/steps/train/attempt-3/job.json"
    assert (layout.result, layout.logs, layout.output("model"), layout.envelope_key) == tuple(
        f"{layout.uri}/{tail}" for tail in ("result.json", "logs.txt", "outputs/model", "envelope.key"))


@pytest.mark.parametrize("uri", ["/data/store", "/data/runs/r/steps/s", "/data/runs/r/steps/s/attempt-x"])
def test_a_folder_that_is_no_attempt_parses_to_none(uri: str) -> None:
    assert AttemptLayout.parse(uri) is None


def _info(attempt_uri: str, run_id: str = "run-1", step: str = "train", attempt: int = 2) -> object:
    from conveyor.step_operators.info import PipelineConfig, StepConfig, StepRunInfo

    return StepRunInfo(config=StepConfig(step, "op", ResourceSettings(), {}), pipeline=PipelineConfig("p"),
                       run_name="r", pipeline_step_name=step, run_id=run_id, step_run_id="sr", attempt=attempt,
                       attempt_uri=attempt_uri)


def test_container_images_and_slurm_read_the_attempt_folder_through_the_layout() -> None:
    from conveyor.images.build import artifact_store_root, local_artifact_store_root
    from conveyor.step_operators.slurm.operator import SlurmStepOperator

    layout = AttemptLayout("/data/store", "run-1", "train", 2)
    info = _info(layout.uri)
    assert artifact_store_root(info) == local_artifact_store_root(info) == "/data/store"
    assert artifact_store_root(_info(AttemptLayout("s3://b/p", "run-1", "train", 2).uri)) == "s3://b/p"
    assert local_artifact_store_root(_info(AttemptLayout("s3://b/p", "run-1", "train", 2).uri)) is None
    assert artifact_store_root(_info(layout.uri, attempt=3)) is None  # not this attempt's folder
    with_dir = SimpleNamespace(config=SimpleNamespace(working_dir="/shared/jobs"))
    assert SlurmStepOperator._job_dir(with_dir, info) == "/shared/jobs/run-1/train/attempt-2"  # type: ignore[arg-type]
    without = SimpleNamespace(config=SimpleNamespace(working_dir=None))
    assert SlurmStepOperator._job_dir(without, info) == layout.uri  # type: ignore[arg-type]


@pipeline
def _sum_pipeline(n: int = 4):
    remote_sum(make_numbers(n))


def test_what_a_run_writes_in_the_attempt_folder_reads_back_as_the_typed_values() -> None:
    """The `local` step operator's job spec and result, found where the layout says, describe the recorded run."""
    run = _sum_pipeline(n=4)
    root = Client().active_stack.artifact_store.artifact_store().root
    layout = AttemptLayout(root, run.id, "remote_sum", 1)
    with open(layout.job, "rb") as fh:
        spec = JobSpec.parse(fh.read(), layout.job)
    with open(layout.result, "rb") as fh:
        result = StepResult.parse(fh.read(), layout.result)
    numbers = run.steps["make_numbers"].outputs["output"]
    assert spec.inputs["numbers"] == ArtifactRef(numbers.uri, numbers.materializer, numbers.data_type, numbers.checksum)
    assert spec.outputs["total"].uri == layout.output("total") and spec.result_uri == layout.result
    assert result.status == StepStatus.COMPLETED and set(result.outputs) == {"total", "pid"}
    for name, view in run.steps["remote_sum"].outputs.items():
        assert result.outputs[name].recorded(view.id, view.name, view.uri) == ArtifactRef(
            view.uri, view.materializer, view.data_type, view.checksum, view.size, view.id, view.name)
