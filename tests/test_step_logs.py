"""The step-log store (execution/logs.py): one file appended to on a local store, numbered chunks on a store
without append (here fsspec's `memory://`, and S3 through moto), read the same way by every reader."""

from __future__ import annotations

import os
import queue
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from testkit import wait_until

from conveyor.artifacts.store import ArtifactStore
from conveyor.execution import logs
from conveyor.execution.logs import StepLog, chunk_dir, follow, read_log

SECRET = "hunter2-very-secret"


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    root = str(tmp_path / "store") if request.param == "local" else f"memory://step-logs-{uuid.uuid4().hex}"
    return ArtifactStore(root)


def _uri(store: ArtifactStore) -> str:
    return store.join("runs", "r1", "steps", "train", "attempt-1", "logs.txt")


def _count_writes(store: ArtifactStore) -> list[bytes]:
    """Every object the store writes, as it writes it (the local file's appends go through `open`)."""
    written: list[bytes] = []
    write_bytes, open_ = store.write_bytes, store.open

    def counting_write(uri: str, data: bytes) -> None:
        written.append(data)
        write_bytes(uri, data)

    class CountingFile:
        def __init__(self, fh: Any) -> None:
            self._fh = fh

        def write(self, data: bytes) -> int:
            written.append(data)
            return int(self._fh.write(data))

        def __getattr__(self, name: str) -> Any:
            return getattr(self._fh, name)

    store.write_bytes = counting_write  # type: ignore[method-assign]
    store.open = lambda uri, mode="rb": CountingFile(open_(uri, mode)) if "b" in mode and "r" not in mode \
        else open_(uri, mode)  # type: ignore[method-assign]
    return written


def test_every_line_is_stored_once_not_the_whole_log_again_at_each_write(store: ArtifactStore) -> None:
    """A log stored while the step prints 300 lines, each stored at once (as a 1 s flush of a slow step would):
    the bytes written stay proportional to the log (a chunk per write plus the file once at close), where
    rewriting the log so far at each write would write it ~150 times over."""
    uri = _uri(store)
    written = _count_writes(store)
    log = StepLog(store, uri)
    lines = [f"epoch {i}: loss={1 / (i + 1):.6f}\n" for i in range(300)]
    for line in lines:
        log.append(line)
        log.write_now()
        assert read_log(store, uri).endswith(line)  # stored and readable before the next line
    log.close()
    total = len("".join(lines).encode())
    assert read_log(store, uri) == "".join(lines)
    assert sum(len(w) for w in written) <= 2 * total
    assert not store.exists(chunk_dir(uri))  # a closed log is one file: logs.txt
    assert store.read_text(uri) == "".join(lines)


def test_a_remote_log_is_stored_in_numbered_chunks_while_it_is_written() -> None:
    store = ArtifactStore(f"memory://step-logs-{uuid.uuid4().hex}")
    uri = _uri(store)
    log = StepLog(store, uri)
    for text in ("one\n", "two\n", "three\n"):
        log.append(text)
        log.write_now()
    assert [c.rsplit("/", 1)[-1] for c in store.ls(chunk_dir(uri))] == ["000001.txt", "000002.txt", "000003.txt"]
    assert store.read_text(store.ls(chunk_dir(uri))[1]) == "two\n"  # each chunk holds only what was new
    assert not store.exists(uri)
    log.close()
    assert store.read_text(uri) == "one\ntwo\nthree\n" and not store.exists(chunk_dir(uri))


def test_a_follower_in_another_thread_sees_lines_before_the_log_is_closed(store: ArtifactStore,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Another reader follows the log while it is written: each line arrives while the step still runs, and after
    close it has read exactly the log, once (the chunks then the closed file, without a duplicate)."""
    monkeypatch.setattr(logs, "LIVE_LOG_FLUSH_S", 0.01)  # the remote log's periodic write, not a forced one
    uri = _uri(store)
    log = StepLog(store, uri)
    ended = threading.Event()
    seen: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [seen.put(t) for t in follow(store, uri, ended.is_set, poll_s=0.01)],
                              daemon=True)
    reader.start()
    got: list[str] = []

    def arrived(text: str) -> bool:
        while not seen.empty():
            got.append(seen.get())
        return "".join(got).endswith(text)

    for i in range(5):
        log.append(f"line {i}\n")
        wait_until(lambda: arrived(f"line {i}\n"), timeout=30, what=f"line {i} at the follower")
        assert reader.is_alive()
    log.append("the last, without a newline")
    log.close()
    ended.set()
    reader.join(timeout=30)
    arrived("")
    assert "".join(got) == "".join(f"line {i}\n" for i in range(5)) + "the last, without a newline"


def test_a_secret_split_across_appends_and_chunks_is_redacted_before_it_is_stored(store: ArtifactStore) -> None:
    uri = _uri(store)
    written = _count_writes(store)
    shown: list[str] = []
    log = StepLog(store, uri, secrets=lambda: {SECRET}, echo=shown.append)
    log.append(f"token={SECRET[:7]}")
    log.write_now()  # a chunk boundary in the middle of the value
    log.append(f"{SECRET[7:]} ok\nsecond line {SECRET[:4]}")
    log.write_now()
    log.append(f"{SECRET[4:]}")
    log.close()
    assert read_log(store, uri) == "token=**** ok\nsecond line ****"
    assert shown == ["token=**** ok", "second line ****"]
    stored = b"".join(written).decode()
    assert SECRET[:7] not in stored and SECRET[-7:] not in stored


def test_a_log_stored_by_nobody_is_only_redacted_and_echoed(tmp_path: Path) -> None:
    """An operator that stores the log itself: the launcher's log of it stores nothing, and shows every line."""
    store = ArtifactStore(str(tmp_path / "store"))
    shown: list[str] = []
    log = StepLog(store, None, secrets=lambda: {SECRET}, echo=shown.append)
    log.append(f"a {SECRET}\nb")
    log.close()
    assert shown == ["a ****", "b"] and not list((tmp_path / "store").rglob("*"))


def test_a_local_log_that_cannot_be_written_is_the_stores_error(tmp_path: Path) -> None:
    """A full disk while the step prints: the store's error, naming the log, not an OSError of the step's."""
    from conveyor.artifacts.store import ArtifactStoreError

    store = ArtifactStore(str(tmp_path / "store"))
    uri = _uri(store)
    Path(uri).parent.mkdir(parents=True)
    Path(uri).symlink_to("/dev/full")  # every write: ENOSPC
    log = StepLog(store, uri)
    with pytest.raises(ArtifactStoreError, match="out of space") as info:
        log.append("no room\n")
    assert str(tmp_path) in str(info.value)


# -- end to end: a step on the local step operator with an S3 artifact store (moto) ----------------------
def test_a_step_on_s3_is_seen_live_in_chunks_and_kept_as_one_file(s3_server: Any, s3_bucket: str,
                                                                   tmp_path: Path) -> None:
    """The `local` flavor's process writes a file on this host; the launcher stores what it reads in S3 as
    chunks while the step runs (read live by the Client), and as one `logs.txt` once it has ended."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "conformance"))
    from backends import use_s3_artifact_store
    from conformance_steps import ticks

    from conveyor import Client, pipeline

    use_s3_artifact_store(f"s3://{s3_bucket}/conveyor", s3_server.endpoint_url)
    sentinel = tmp_path / "release"

    @pipeline(enable_cache=False)
    def p() -> None:
        ticks.with_options(step_operator="local")(str(sentinel))

    def keys() -> list[str]:
        pages = s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.setdefault("run", p()), daemon=True)
    runner.start()
    client = Client()

    def live() -> Any:
        runs = client.list_pipeline_runs()
        return client.get_pipeline_run(runs[0].id).steps["ticks"] if runs else None

    wait_until(lambda: live() is not None and "tick-0" in live().logs(), timeout=120, what="tick-0 in the stored log")
    running = live()
    assert running.status == "running" and "tick-1" not in running.logs()
    assert any(k.endswith("/ticks/attempt-1/logs/000001.txt") for k in keys())  # live: a chunk...
    assert not any(k.endswith("/ticks/attempt-1/logs.txt") for k in keys())  # ...not the whole log rewritten
    sentinel.write_text("go")
    runner.join(timeout=120)
    done = result["run"].steps["ticks"]
    assert done.status == "completed" and done.logs() == "tick-0\ntick-1\n"
    assert any(k.endswith("/ticks/attempt-1/logs.txt") for k in keys())
    assert not any("/ticks/attempt-1/logs/" in k for k in keys())


def test_a_log_another_process_writes_to_s3_is_seen_by_a_reader_that_looked_before(s3_server: Any, s3_bucket: str) -> None:
    """s3fs caches folder listings: a reader that found no log once must still see the chunks another process
    (an orchestrator running a script) stores afterwards, as `conveyor run logs` and the Client read them."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "conformance"))
    from backends import use_s3_artifact_store

    from conveyor.context import get_context

    use_s3_artifact_store(f"s3://{s3_bucket}/conveyor", s3_server.endpoint_url)
    store = get_context().load_stack().artifact_store.artifact_store()
    uri = store.join("runs", "r1", "steps", "s", "attempt-1", "logs.txt")
    store.write_text(store.join("runs", "r1", "steps", "s", "attempt-1", "job.json"), "{}")  # the folder exists
    assert logs.read_log(store, uri) == ""  # looked once: nothing yet, and the listings are now cached
    folder = logs.chunk_dir(uri).split(f"{s3_bucket}/", 1)[1]
    s3 = s3_server.client()  # the other process's writes: not through this process's filesystem
    s3.put_object(Bucket=s3_bucket, Key=f"{folder}/000001.txt", Body=b"starting\n")
    assert logs.read_log(store, uri) == "starting\n"  # the chunks' folder is now listed, and cached
    s3.put_object(Bucket=s3_bucket, Key=f"{folder}/000002.txt", Body=b"sleeping\n")
    assert logs.read_log(store, uri) == "starting\nsleeping\n"
