"""The S3 artifact store against moto's S3 server over real HTTP, with the real boto3 and s3fs.

No AWS account is reachable from here: moto speaks the S3 wire protocol on 127.0.0.1, which is what these tests
cover (not IAM, not eventual consistency, not a real region).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel
from steps_lib import double, make_numbers, remote_sum

from conveyor import Client, pipeline
from conveyor.artifacts.materializers import load_artifact, save_artifact
from conveyor.artifacts.store import ArtifactStore
from conveyor.context import get_context, reset_contexts


class Params(BaseModel):
    lr: float
    layers: list[int]


@pytest.fixture
def s3_stack(s3_server, s3_bucket, monkeypatch) -> str:
    """A stack `cloud`: the local orchestrator, an s3 artifact store, the local step operator."""
    ctx = get_context()
    ctx.ensure_defaults()
    store_id = ctx.store.create_component("artifact_store", "s3store", "s3",
                                          {"path": f"s3://{s3_bucket}/conveyor", "endpoint_url": s3_server.endpoint_url})
    ids = [ctx.store.get_component("orchestrator", "default")["id"], store_id,
           ctx.store.get_component("step_operator", "local")["id"]]
    ctx.store.create_stack("cloud", ids)
    monkeypatch.setenv("CONVEYOR_STACK", "cloud")
    reset_contexts()
    return s3_bucket


def _objects(s3_server, bucket: str) -> list[str]:
    pages = s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.mark.parametrize("value", [
    {"a": [1, 2.5, None, "x"]}, (1, "two"), {3, 1, 2}, b"\x00raw bytes", "text",
    np.arange(12, dtype=np.float32).reshape(3, 4), pd.DataFrame({"x": [1, 2], "y": ["a", "b"]}),
    Params(lr=0.1, layers=[64, 32]),
], ids=["json", "tuple", "set", "bytes", "str", "numpy", "dataframe", "pydantic"])
def test_materializers_round_trip_through_s3(s3_server, s3_bucket, value) -> None:
    store = ArtifactStore(f"s3://{s3_bucket}/artifacts", {"client_kwargs": {"endpoint_url": s3_server.endpoint_url}})
    uri = store.join("a", "x")
    meta = save_artifact(value, uri, store)
    loaded = load_artifact(uri, store, meta.materializer, meta.data_type)
    if isinstance(value, np.ndarray):
        np.testing.assert_array_equal(loaded, value)
    elif isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(loaded, value)
    else:
        assert loaded == value
    assert any(k.startswith("artifacts/a/x/") for k in _objects(s3_server, s3_bucket))


def test_a_truncated_object_is_detected(s3_server, s3_bucket) -> None:
    from conveyor.artifacts.materializers import ArtifactCorruptedError

    store = ArtifactStore(f"s3://{s3_bucket}/artifacts", {"client_kwargs": {"endpoint_url": s3_server.endpoint_url}})
    meta = save_artifact({"weights": list(range(100))}, store.join("w"), store)
    key = next(k for k in _objects(s3_server, s3_bucket) if k.endswith("data.json"))
    s3_server.client().put_object(Bucket=s3_bucket, Key=key, Body=b'{"weights": [0, 1')
    with pytest.raises(ArtifactCorruptedError):
        load_artifact(store.join("w"), store, meta.materializer, meta.data_type)


@pipeline
def s3_pipeline(n: int = 5):
    total, _pid = remote_sum(make_numbers(n))
    double(total)


def test_local_operator_steps_exchange_artifacts_only_through_s3(s3_stack: str, s3_server, project) -> None:
    run = s3_pipeline(n=5)
    assert run.stack_name == "cloud"
    remote = run.steps["remote_sum"]
    assert remote.outputs["total"].uri.startswith(f"s3://{s3_stack}/conveyor/")
    assert run.steps["double"].outputs["output"].load() == 20
    assert "summing 5 numbers" in remote.logs()  # uploaded to S3 when the step ended
    keys = _objects(s3_server, s3_stack)
    assert any(k.endswith("remote_sum/attempt-1/job.json") for k in keys)
    assert any(k.endswith("remote_sum/attempt-1/result.json") for k in keys)
    assert not (project / ".conveyor" / "artifacts" / "runs").exists()  # nothing went to the local store
    job = s3_server.client().get_object(Bucket=s3_stack, Key=next(k for k in keys if k.endswith("remote_sum/attempt-1/job.json")))
    spec = json.loads(job["Body"].read())
    assert spec["artifact_store"]["storage_options"] == {"client_kwargs": {"endpoint_url": s3_server.endpoint_url}}
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in json.dumps(spec)  # credentials travel as environment, not spec
    again = s3_pipeline(n=5)
    assert [s.status for s in again.steps.values()] == ["cached"] * 3


def test_slurm_steps_read_and_write_a_remote_artifact_store(s3_stack: str, s3_server, slurm_cluster, step_operator,
                                                           project) -> None:
    """The job finds its spec, inputs and code through S3; only the batch files sit in a shared directory."""
    step_operator("hpc", "slurm", stack="cloud", partition=slurm_cluster.partition, poll_interval=0.5,
                  working_dir=str(slurm_cluster.work_dir / "jobs"), ship_code=True)

    @pipeline(enable_cache=False)
    def on_slurm():
        total, _pid = remote_sum.with_options(step_operator="hpc")(make_numbers(4))
        double(total)

    run = on_slurm()
    assert run.steps["remote_sum"].config.step_operator == "hpc"
    assert run.steps["double"].outputs["output"].load() == 12
    keys = _objects(s3_server, s3_stack)
    assert any(k.startswith("conveyor/code/") and k.endswith(".zip") for k in keys)
    assert any(k.endswith("remote_sum/attempt-1/result.json") for k in keys)
    assert "summing 4 numbers" in Client().get_pipeline_run(run.id).steps["remote_sum"].logs()


def test_ssh_steps_use_a_remote_artifact_store_directly(s3_stack: str, s3_server, sshd_server, step_operator,
                                                         project) -> None:
    """With an S3 store nothing is shipped over SSH: the host reads inputs and code from S3 and writes outputs there."""
    import posixpath

    remote_dir = posixpath.join(sshd_server.remote_dir, "s3-store-test")
    step_operator("far", "ssh", stack="cloud", hostname=sshd_server.host, port=sshd_server.port,
                  username=sshd_server.username, key_file=str(sshd_server.key_path),
                  known_hosts=str(sshd_server.known_hosts), python=sshd_server.python, remote_dir=remote_dir,
                  poll_interval=0.2)

    @pipeline(enable_cache=False)
    def over_ssh():
        total, _pid = remote_sum.with_options(step_operator="far")(make_numbers(6))
        double(total)

    run = over_ssh()
    assert run.steps["double"].outputs["output"].load() == 30
    assert run.steps["remote_sum"].outputs["total"].uri.startswith(f"s3://{s3_stack}/")
    keys = _objects(s3_server, s3_stack)
    assert any(k.startswith("conveyor/code/") and k.endswith(".zip") for k in keys)
    assert any(k.endswith("remote_sum/attempt-1/result.json") for k in keys)
    mirrored = sshd_server.run(f"find {remote_dir} -path '*runs*' -name '*.json' 2>/dev/null | head -5").stdout
    assert mirrored.strip() == "", f"artifacts were shipped over SSH although the store is S3: {mirrored}"
