"""Artifacts at the floor (issue 15): each file is hashed once, while it is written, and a load trusts a file whose
stamp shows nothing touched it since; anything that changed it is still refused. The name index keeps one file
under both of its names."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pytest

from conveyor import Client, pipeline, step
from conveyor.artifacts import (
    MANIFEST_NAME,
    ArtifactCorruptedError,
    ArtifactStore,
    load_artifact,
    save_artifact,
)
from conveyor.artifacts.registry import (
    IndexEntry,
    read_index,
    read_index_by_id,
    write_index,
)

ARRAYS = {
    "c_order": np.arange(24, dtype=np.float64).reshape(4, 6),
    "fortran_order": np.asfortranarray(np.arange(24, dtype=np.int32).reshape(4, 6)),
    "big_endian": np.arange(5, dtype=">u2"),
    "structured": np.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", ">f8")]),
    "datetime": np.array(["2020-01-01", "2021-06-30"], dtype="datetime64[D]"),
    "empty": np.zeros((0, 3)),
    "strided_view": np.arange(20).reshape(4, 5)[:, ::2],  # not contiguous: np.save writes it, hashed from disk
    "large": np.arange(3 << 20, dtype=np.float32),  # 12 MiB: hashed on a second thread while it is written
}


def _manifest(uri: str) -> dict[str, Any]:
    return json.loads(Path(uri, MANIFEST_NAME).read_text())


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_an_ndarray_is_stored_as_np_save_writes_it_with_its_sha256(store: ArtifactStore, name: str) -> None:
    array = ARRAYS[name]
    uri = store.join(name)
    save_artifact(array, uri, store)
    expected = io.BytesIO()
    np.save(expected, array, allow_pickle=False)
    data = Path(uri, "data.npy").read_bytes()
    assert data == expected.getvalue()
    entry = _manifest(uri)["files"]["data.npy"]
    assert (entry["size"], entry["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert oct(os.stat(Path(uri, "data.npy")).st_mode & 0o777) == "0o600"
    np.testing.assert_array_equal(load_artifact(uri, store), array)


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file the artifact code reads back to hash it."""
    hashed: list[str] = []
    digest = ArtifactStore._digest

    def counting(self: ArtifactStore, uri: str) -> tuple[int, str]:
        hashed.append(uri)
        return digest(self, uri)

    monkeypatch.setattr(ArtifactStore, "_digest", counting)
    return hashed


@step
def make_array(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


@step
def change_input_in_place(x: np.ndarray) -> Annotated[float, "total"]:
    assert isinstance(x, np.memmap) and x.mode == "c", type(x)  # a copy-on-write map of the stored file
    x += 1  # the step may write to its input; only its own pages change
    return float(x.sum())


@pipeline(enable_cache=False)
def hand_over(n: int = 1000) -> None:
    change_input_in_place(make_array(n))


@step(step_operator="local")
def make_array_remote(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


@step(step_operator="local")
def change_input_in_place_remote(x: np.ndarray) -> float:
    assert isinstance(x, np.memmap) and x.mode == "c", type(x)
    x += 1
    return float(x.sum())


@pipeline(enable_cache=False)
def hand_over_remote(n: int = 1000) -> None:
    change_input_in_place_remote(make_array_remote(n))


def test_a_pipeline_hands_an_ndarray_on_without_reading_any_file_back(monkeypatch: pytest.MonkeyPatch) -> None:
    hashed = _count_reads(monkeypatch)
    run = hand_over(n=1000)
    assert run.status == "completed"
    assert run.steps["change_input_in_place"].outputs["total"].load() == sum(range(1, 1001))
    stored = run.steps["make_array"].outputs["output"].load()
    np.testing.assert_array_equal(stored, np.arange(1000, dtype=np.float64))  # the step's `x += 1` stayed its own
    assert hashed == []  # hashed while written, trusted by stamp when loaded: no file was read back to hash it


def test_outputs_written_on_the_local_step_operator_carry_their_stamp() -> None:
    run = hand_over_remote(n=1000)
    assert run.status == "completed"
    assert run.steps["change_input_in_place_remote"].outputs["output"].load() == sum(range(1, 1001))
    made = run.steps["make_array_remote"].outputs["output"]
    entry = _manifest(made.uri)["files"]["data.npy"]
    now = os.stat(Path(made.uri, "data.npy"))
    assert entry["stamp"] == [now.st_size, now.st_mtime_ns, now.st_ctime_ns, now.st_ino]
    np.testing.assert_array_equal(made.load(), np.arange(1000, dtype=np.float64))


def _rewrite_same_size(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    with open(path, "r+b") as fh:  # in place: same inode, same size
        fh.write(data)


def test_a_file_changed_right_after_it_was_written_is_refused(store: ArtifactStore) -> None:
    uri = store.join("a")
    meta = save_artifact(np.arange(100), uri, store)
    _rewrite_same_size(Path(uri, "data.npy"))  # within the clock tick of the write, most likely
    with pytest.raises(ArtifactCorruptedError, match="data.npy expected sha256"):
        load_artifact(uri, store, meta.materializer, meta.data_type, checksum=meta.checksum)


def test_a_file_changed_with_its_mtime_put_back_is_refused(store: ArtifactStore) -> None:
    uri = store.join("a")
    meta = save_artifact(np.arange(100), uri, store)
    path = Path(uri, "data.npy")
    stamp = _manifest(uri)["files"]["data.npy"]["stamp"]
    _rewrite_same_size(path)
    os.utime(path, ns=(os.stat(path).st_atime_ns, stamp[1]))  # `touch -r`: size and mtime as recorded
    assert (os.stat(path).st_size, os.stat(path).st_mtime_ns) == (stamp[0], stamp[1])
    with pytest.raises(ArtifactCorruptedError, match="data.npy expected sha256"):
        load_artifact(uri, store, meta.materializer, meta.data_type, checksum=meta.checksum)


def test_a_file_replaced_by_a_copy_that_keeps_its_times_is_refused(store: ArtifactStore, tmp_path: Path) -> None:
    uri = store.join("a")
    save_artifact(np.arange(100), uri, store)
    path = Path(uri, "data.npy")
    altered = tmp_path / "altered.npy"
    shutil.copy2(path, altered)
    _rewrite_same_size(altered)
    st = os.stat(path)
    os.utime(altered, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(altered, path)  # another inode, with the recorded size and mtime
    with pytest.raises(ArtifactCorruptedError, match="data.npy expected sha256"):
        load_artifact(uri, store)


def test_an_untouched_file_is_not_read_back_but_a_touched_one_is(store: ArtifactStore,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    uri = store.join("j")
    meta = save_artifact({"a": [1, 2]}, uri, store)
    hashed = _count_reads(monkeypatch)
    assert load_artifact(uri, store, meta.materializer, meta.data_type, checksum=meta.checksum) == {"a": [1, 2]}
    assert hashed == []
    os.chmod(Path(uri, "data.json"), 0o600)  # changes the ctime, not the content: hashed again, and accepted
    assert load_artifact(uri, store, checksum=meta.checksum) == {"a": [1, 2]}
    assert hashed == [f"{uri}/data.json"]


def test_where_timestamps_are_rounded_every_load_hashes_every_file(store: ArtifactStore,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    utime = os.utime

    def microseconds_only(path: Any, *args: Any, ns: tuple[int, int], **kwargs: Any) -> None:
        utime(path, *args, ns=(ns[0] // 1000 * 1000, ns[1] // 1000 * 1000), **kwargs)

    uri = store.join("a")
    with monkeypatch.context() as patched:
        patched.setattr(os, "utime", microseconds_only)  # a filesystem that keeps microseconds
        meta = save_artifact(np.arange(100), uri, store)
    assert "stamp" not in _manifest(uri)["files"]["data.npy"]
    path = Path(uri, "data.npy")
    before = os.stat(path)
    _rewrite_same_size(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(ArtifactCorruptedError, match="data.npy expected sha256"):
        load_artifact(uri, store, meta.materializer, meta.data_type)


@step
def named_model() -> Annotated[dict, "model"]:
    return {"w": [1, 2]}


@step(step_operator="local")
def load_by_id_remote(model_id: str) -> dict:
    from conveyor import load_artifact as load_by_name

    return {"by_id": load_by_name(model_id), "by_name": load_by_name("model")}


@pipeline(enable_cache=False)
def named_pipeline() -> None:
    named_model()


@pipeline(enable_cache=False)
def reads_it(model_id: str) -> None:
    load_by_id_remote(model_id)


def test_the_name_index_keeps_one_file_under_both_names() -> None:
    run = named_pipeline()
    model = run.steps["named_model"].outputs["model"]
    store = Client().active_stack.artifact_store.artifact_store()
    by_name = Path(store.root, "artifact_index", "names", "model", "1.json")
    by_id = Path(store.root, "artifact_index", "ids", f"{model.id}.json")
    assert os.path.samefile(by_name, by_id)
    assert json.loads(by_id.read_text())["uri"] == model.uri
    loaded = reads_it(model.id).steps["load_by_id_remote"].outputs["output"].load()
    assert loaded == {"by_id": {"w": [1, 2]}, "by_name": {"w": [1, 2]}}


def test_the_index_writes_two_copies_where_there_are_no_links(tmp_path: Path) -> None:
    import uuid

    remote = ArtifactStore(f"memory://conveyor-test-{uuid.uuid4().hex}")
    local = ArtifactStore(str(tmp_path / "artifacts"))
    try:
        for store in (remote, local):
            for version in ("1", "1", "2"):  # indexing a version again replaces its entry
                entry = IndexEntry(uuid.uuid4().hex, "m", version, store.join("x"),
                                   "conveyor.artifacts.materializers._builtin:JSONMaterializer", "builtins:dict",
                                   None, float(version))
                write_index(store, entry)
                assert read_index(store, "m", version) == entry == read_index_by_id(store, entry.id)
            assert read_index(store, "m") == entry
            write_index(store, entry)  # the same entry twice: its id's name is replaced too
            assert read_index_by_id(store, entry.id) == entry
        assert remote.link(remote.join("artifact_index", "names", "m", "1.json"), remote.join("copy.json")) is False
    finally:
        if remote.fs.exists(remote.root):
            remote.fs.rm(remote.root, recursive=True)
