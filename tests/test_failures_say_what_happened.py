"""Failures say what happened: a full disk, a damaged metadata store, a broken job spec, a moved result,
non-finite resources, sys.exit in a step, a killed run's temporaries, and the memory limit's fallback."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from conveyor import Client, pipeline, step
from conveyor.exceptions import RunFailedError
from testkit import add_step_operator, assert_nothing_left, mounted_tmpfs


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs for the artifact store (as in test_hostile_stores.py)."""
    yield from mounted_tmpfs(tmp_path / "tiny", "size=2m")


@step
def fill_the_disk(path: str) -> bytes:
    """Fills the file system under `path` (as another program might while the step runs), then returns an output
    that has nowhere to go: nor has its log, nor its result."""
    fd = os.open(os.path.join(path, "filler"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"x" * 65536)
    except OSError:
        pass
    finally:
        os.close(fd)
    print("the disk is full now")
    return b"y" * 300_000


def _use_store_on(conveyor_cli, disk: Path) -> None:
    conveyor_cli("artifact-store", "register", "tiny", "--flavor=local", f"--path={disk}")
    conveyor_cli("stack", "update", "default", "--artifact-store=tiny")


@pytest.mark.parametrize("where", ["in-process", "local"])
def test_a_disk_that_fills_while_the_step_runs_is_an_out_of_space_store_error(where, tiny_disk, conveyor_cli):
    _use_store_on(conveyor_cli, tiny_disk)
    if where == "local":
        add_step_operator("loc", "local")

    @pipeline(enable_cache=False)
    def fills():
        fill_the_disk.with_options(step_operator="loc" if where == "local" else None)(str(tiny_disk))

    with pytest.raises(RunFailedError) as info:
        fills()
    step_run = info.value.run.steps["fill_the_disk"]
    assert step_run.status == "failed" and step_run.outputs == {}
    assert step_run.failure_kind == "store", (step_run.failure_kind, step_run.error)
    assert "out of space" in step_run.error and str(tiny_disk) in step_run.error, step_run.error
    assert_nothing_left(step_run)


def test_a_damaged_sqlite_store_says_the_same_through_the_python_api_as_through_the_cli(project, conveyor_cli):
    from conveyor.exceptions import ConveyorError

    conveyor_cli("stack", "list")  # creates the project's store
    db = project / ".conveyor" / "conveyor.db"
    with db.open("r+b") as fh:  # the header and the first page overwritten, as a bad copy or a bad disk might
        fh.write(b"not a database!!" + os.urandom(4080))
    with pytest.raises(ConveyorError) as info:
        Client().list_pipeline_runs()
    api = str(info.value)
    assert f"the metadata store {db} is damaged" in api and "restore it from a backup" in api, api
    cli = conveyor_cli("run", "list", check=False)
    assert cli.returncode == 1 and "Traceback" not in cli.stderr, cli.stderr
    assert cli.stderr.strip() == f"Error: {api}"


@step
def counted(counter: str) -> int:
    """Appends a line to `counter` each time the user's code runs."""
    with open(counter, "a") as fh:
        fh.write("ran\n")
    return 7


@pytest.mark.parametrize("fault,kind,message,runs", [
    ("binary_job_spec", "job_spec", "is not UTF-8 text", 0),
    ("moved_result", "result", "ended normally (exit code 0) but there is no result at", 1),
])
def test_a_damaged_job_spec_or_a_moved_result_fails_once_and_never_reruns_the_step(fault, kind, message, runs,
                                                                                  tmp_path):
    add_step_operator("faulty", "fault", fault=fault)  # infrastructure_retries=2 by default: none may be used
    counter = tmp_path / "runs.txt"

    @pipeline(enable_cache=False)
    def once():
        counted.with_options(step_operator="faulty")(str(counter))

    with pytest.raises(RunFailedError) as info:
        once()
    step_run = info.value.run.steps["counted"]
    assert (step_run.failure_kind, step_run.attempt) == (kind, 1), (step_run.failure_kind, step_run.error)
    assert message in step_run.error
    ran = counter.read_text().count("ran") if counter.exists() else 0
    assert ran == runs, f"the user's code ran {ran} times"
    assert_nothing_left(step_run)


@pytest.mark.parametrize("resources,field,words", [
    ({"cpu_count": float("inf")}, "cpu_count", "finite number of CPUs"),
    ({"cpu_count": float("nan")}, "cpu_count", "finite number of CPUs"),
    ({"cpu_count": -2}, "cpu_count", "must not be negative"),
    ({"gpu_count": float("inf")}, "gpu_count", "finite number of GPUs"),
    ({"memory": "infGB"}, "memory", "accepted forms"),
    ({"memory": "1" + "0" * 400 + "GB"}, "memory", "finite size"),
    ({"memory": "99999999999PB"}, "memory", "larger than any machine"),
])
def test_non_finite_and_negative_resources_are_refused_by_name(resources, field, words):
    from conveyor.config import ResourceSettings
    from conveyor.exceptions import ConfigError

    def train() -> int:
        return 1

    with pytest.raises(ConfigError) as info:
        step(settings={"resources": resources})(train)
    assert f"{field}: " in str(info.value) and words in str(info.value), str(info.value)
    with pytest.raises(ValueError, match=words):
        ResourceSettings(**resources)


@pytest.mark.parametrize("code", [0, 3])
@pytest.mark.parametrize("where", ["in-process", "local"])
def test_sys_exit_in_a_step_is_a_failure_of_the_step_whatever_the_code(where, code):
    @step
    def exits(x: int) -> int:
        import sys

        sys.exit(code)

    @step
    def after(x: int) -> int:
        return x

    @pipeline(enable_cache=False)
    def p():
        after(exits.with_options(step_operator="local" if where == "local" else None)(1))

    with pytest.raises(RunFailedError) as info:
        p()
    run = info.value.run
    failed = run.steps["exits"]
    assert failed.failure_kind == "user", (failed.failure_kind, failed.error)
    assert f"the step called sys.exit({code})" in failed.error
    assert ("even with code 0" in failed.error) == (code == 0)
    assert run.steps["after"].status != "completed"


def test_resume_removes_the_temporaries_writers_left_but_not_where_a_job_still_writes(tmp_path):
    from conveyor.artifacts.store import ArtifactStore

    store = ArtifactStore(tmp_path / "store")
    run = store.join("runs", "r1")
    left = [f"{run}/steps/a/attempt-1/outputs/.output.tmp-0123456789ab",
            f"{run}/steps/a/attempt-1/.result.json.tmp-0123456789ab",
            f"{run}/steps/a/attempt-1/outputs/.model.old-ba9876543210"]
    kept = [f"{run}/steps/b/attempt-2/outputs/.output.tmp-0123456789ab",  # a job still writing
            f"{run}/steps/a/attempt-1/outputs/output/data.bin", f"{run}/steps/a/attempt-1/outputs/.hidden-by-user"]
    for path in left + kept:
        store.write_bytes(f"{path}/x" if "tmp" in path or "old" in path else path, b"data")
    removed = store.remove_temporaries(run, keep=[f"{run}/steps/b/attempt-2"])
    assert sorted(removed) == sorted(left)
    assert not any(os.path.lexists(p) for p in left)
    assert all(os.path.exists(p) for p in kept)


def test_a_memory_limit_without_a_writable_cgroup_says_in_the_log_that_it_is_per_process(monkeypatch):
    from conveyor.step_operators.local import limits

    # this machine may have a writable cgroup: take it away, as an unprivileged container would
    monkeypatch.setattr(limits, "_cgroup_v1", lambda limit: None)
    monkeypatch.setattr(limits, "_cgroup_v2", lambda limit: None)
    add_step_operator("capped", "local", warm_start=False)

    @step(step_operator="capped", settings={"resources": {"memory": "2GiB"}})
    def small() -> int:
        print("step output")
        return 1

    @pipeline(enable_cache=False)
    def p():
        small()

    step_run = p().steps["small"]
    assert step_run.submission["data"]["memory"] == "rlimit"
    first = step_run.logs().splitlines()[0]
    assert first == ("memory limit enforced per process with RLIMIT_AS (no writable cgroup): "
                     "children each get the limit"), step_run.logs()
