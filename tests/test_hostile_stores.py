"""Artifact stores that are full, read-only or unreachable, for real: each fails fast, says what to fix, and
leaves the metadata store consistent (no run left `running`, no artifact recorded that is not there)."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

from conveyor import Client, pipeline, step
from conveyor.exceptions import ConveyorError, RunFailedError
from testkit import mounted_tmpfs


@step
def small() -> int:
    return 1


@step
def big(x: int) -> bytes:
    return b"x" * (8 << 20)


@pipeline(enable_cache=False)
def writes_big():
    big(small())


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB file system: an 8 MiB artifact cannot fit."""
    yield from mounted_tmpfs(tmp_path / "tiny", "size=2m")


@pytest.fixture
def read_only_disk(tmp_path: Path) -> Iterator[Path]:
    yield from mounted_tmpfs(tmp_path / "ro", "ro,size=1m")


def _use_artifact_store(conveyor_cli, name: str, *args: str) -> None:
    conveyor_cli("artifact-store", "register", name, *args)
    conveyor_cli("stack", "update", "default", f"--artifact-store={name}")


def _assert_consistent() -> None:
    """The run ended, and every artifact the store records exists and loads."""
    client = Client()
    for summary in client.list_pipeline_runs():
        run = client.get_pipeline_run(summary.id)
        assert run.status in ("failed", "completed"), run.status
        assert all(s.status != "running" for s in run.steps.values())
        for s in run.steps.values():
            for artifact in s.outputs.values():
                artifact.load()


def test_a_full_disk_fails_the_step_fast_says_so_and_keeps_the_store_consistent(tiny_disk: Path, conveyor_cli):
    _use_artifact_store(conveyor_cli, "tiny", "--flavor=local", f"--path={tiny_disk}")
    started = time.monotonic()
    with pytest.raises(RunFailedError) as info:
        writes_big()
    assert time.monotonic() - started < 30
    step_run = info.value.run.steps["big"]
    assert step_run.status == "failed" and step_run.failure_kind == "store" and step_run.outputs == {}
    assert "out of space" in step_run.error and str(tiny_disk) in step_run.error, step_run.error
    assert info.value.run.steps["small"].status == "completed"
    _assert_consistent()
    leftovers = [p for p in tiny_disk.rglob("*") if p.is_file() and p.stat().st_size > 1 << 20]
    assert leftovers == [], f"partial files fill the disk: {leftovers}"


def test_a_read_only_store_fails_fast_and_names_the_fix(read_only_disk: Path, conveyor_cli):
    _use_artifact_store(conveyor_cli, "frozen", "--flavor=local", f"--path={read_only_disk / 'artifacts'}")
    started = time.monotonic()
    with pytest.raises(ConveyorError) as info:
        writes_big()
    assert time.monotonic() - started < 30
    message = str(info.value)
    assert "read-only" in message and "conveyor artifact-store update" in message, message
    _assert_consistent()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_an_unreachable_s3_store_fails_fast_and_names_the_endpoint(conveyor_cli, monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    _use_artifact_store(conveyor_cli, "gone", "--flavor=s3", "--path=s3://bucket/conveyor", f"--endpoint_url={endpoint}")
    started = time.monotonic()
    with pytest.raises(ConveyorError) as info:
        writes_big()
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert elapsed < 60, f"took {elapsed:.0f}s to give up on an unreachable store"
    assert "unreachable" in message and endpoint.split("//")[1] in message, message
    _assert_consistent()
