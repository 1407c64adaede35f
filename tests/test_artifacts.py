"""Artifact store and materializers: round-trips, atomicity, corruption and error messages."""

from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NewType, Optional

import numpy as np
import pandas as pd
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.artifacts import (
    MANIFEST_NAME,
    ArtifactCorruptedError,
    ArtifactMeta,
    ArtifactStore,
    ArtifactStoreError,
    BaseMaterializer,
    CannotMaterialize,
    import_path,
    load_artifact,
    load_import_path,
    materializer_for,
    register_materializer,
    save_artifact,
)
from conveyor.artifacts.materializers import (
    BytesMaterializer,
    CloudpickleMaterializer,
    JSONMaterializer,
    NumpyMaterializer,
    PandasMaterializer,
    PydanticMaterializer,
)
from conveyor.artifacts.materializers import _builtin, _registry

# -- fixtures -------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


@pytest.fixture
def memory_store() -> Iterator[ArtifactStore]:
    root = f"memory://conveyor-test-{uuid.uuid4().hex}"
    store = ArtifactStore(root)
    yield store
    if store.fs.exists(root):
        store.fs.rm(root, recursive=True)


@pytest.fixture(params=["local", "memory"])
def any_store(request: pytest.FixtureRequest, store: ArtifactStore, memory_store: ArtifactStore) -> ArtifactStore:
    return store if request.param == "local" else memory_store


@pytest.fixture
def clean_registry() -> Iterator[None]:
    """User registrations are global; keep them from leaking between tests."""
    by_type, order = dict(_registry._USER_BY_TYPE), list(_registry._USER_ORDER)
    yield
    _registry._USER_BY_TYPE.clear()
    _registry._USER_BY_TYPE.update(by_type)
    _registry._USER_ORDER[:] = order
    _registry._CACHE.clear()


def roundtrip(value: Any, store: ArtifactStore, data_type: Any = None, name: str = "out") -> tuple[Any, ArtifactMeta]:
    uri = store.join("run", name)
    meta = save_artifact(value, uri, store, data_type)
    return load_artifact(uri, store, meta.materializer, meta.data_type), meta


@contextmanager
def no_warnings() -> Iterator[None]:
    """Built-in materializers must not warn; only the cloudpickle fallback may."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


class PlainThing:
    """Module-level so its import path resolves on load."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlainThing) and other.x == self.x


class Point(pydantic.BaseModel):
    x: int
    y: float
    tags: list[str] = []


class Point3(Point):
    z: int = 0


class Scene(pydantic.BaseModel):
    name: str
    points: list[Point]
    meta: dict[str, int] | None = None


# -- store: paths and identity --------------------------------------------------


def test_local_root_is_absolute_and_normalized(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = ArtifactStore("rel/dir/../arts/")
    assert store.is_local
    assert store.root == str(tmp_path / "rel" / "arts")
    assert ArtifactStore(f"file://{tmp_path}/x/").root == str(tmp_path / "x")
    assert ArtifactStore(tmp_path).root == str(tmp_path)


def test_remote_root_keeps_url_without_trailing_slash() -> None:
    store = ArtifactStore("s3://bucket/prefix/", {"anon": True})
    assert not store.is_local
    assert store.root == "s3://bucket/prefix"
    assert store.join("a", "/b/", "", "c/d") == "s3://bucket/prefix/a/b/c/d"
    assert store.join() == "s3://bucket/prefix"
    assert store.local_path(store.join("a")) is None
    assert ArtifactStore("memory://").join("x") == "memory://x"


def test_join_and_local_path(store: ArtifactStore) -> None:
    uri = store.join("runs", "r1/", "/step")
    assert uri == f"{store.root}/runs/r1/step"
    assert store.local_path(uri) == uri
    assert store.local_path("runs/r1") == f"{store.root}/runs/r1"


def test_store_pickles_without_filesystem_object(store: ArtifactStore) -> None:
    _ = store.fs  # force creation
    clone = pickle.loads(pickle.dumps(store))
    assert clone == store and clone._fs is None
    remote = ArtifactStore("memory://bucket/x", {"skip_instance_cache": True})
    assert pickle.loads(pickle.dumps(remote)).storage_options == {"skip_instance_cache": True}


def test_fs_is_lazy_and_local_filesystem(store: ArtifactStore) -> None:
    from fsspec.implementations.local import LocalFileSystem

    assert store._fs is None
    assert isinstance(store.fs, LocalFileSystem)
    assert store.fs is store.fs


# -- store: file operations -----------------------------------------------------


def test_bytes_text_ls_rm(any_store: ArtifactStore) -> None:
    s = any_store
    s.write_bytes(s.join("d", "a.bin"), b"\x00\x01")
    s.write_text(s.join("d", "b.txt"), "héllo")
    assert s.read_bytes(s.join("d", "a.bin")) == b"\x00\x01"
    assert s.read_text(s.join("d", "b.txt")) == "héllo"
    assert s.ls(s.join("d")) == [s.join("d", "a.bin"), s.join("d", "b.txt")]
    s.write_bytes(s.join("d", "a.bin"), b"new")
    assert s.read_bytes(s.join("d", "a.bin")) == b"new"
    assert s.exists(s.join("d", "b.txt"))
    s.rm(s.join("d", "b.txt"))
    assert not s.exists(s.join("d", "b.txt"))
    s.rm(s.join("d"), recursive=True)
    assert not s.exists(s.join("d"))


def test_open_and_makedirs(any_store: ArtifactStore) -> None:
    s = any_store
    s.makedirs(s.join("x", "y"))
    assert s.exists(s.join("x", "y"))
    with s.open(s.join("x", "y", "f"), "wb") as fh:
        fh.write(b"abc")
    with s.open(s.join("x", "y", "f")) as fh:
        assert fh.read() == b"abc"


def test_write_bytes_leaves_no_temp_files(store: ArtifactStore) -> None:
    for i in range(3):
        store.write_bytes(store.join("f.txt"), str(i).encode())
    assert os.listdir(store.root) == ["f.txt"]


def test_rm_non_empty_dir_without_recursive_explains(store: ArtifactStore) -> None:
    store.write_text(store.join("d", "f"), "x")
    with pytest.raises(ArtifactStoreError, match="recursive=True"):
        store.rm(store.join("d"))


# -- store: atomic_dir ----------------------------------------------------------


def test_atomic_dir_commits_on_success(any_store: ArtifactStore) -> None:
    s = any_store
    target = s.join("art")
    with s.atomic_dir(target) as tmp:
        assert tmp != target and not s.exists(target)
        s.write_text(f"{tmp}/a.txt", "1")
        s.write_text(f"{tmp}/sub/b.txt", "2")
    assert s.read_text(f"{target}/a.txt") == "1"
    assert s.read_text(f"{target}/sub/b.txt") == "2"
    assert [p.rsplit("/", 1)[-1] for p in s.ls(s.root)] == ["art"]


def test_atomic_dir_replaces_existing(any_store: ArtifactStore) -> None:
    s = any_store
    target = s.join("art")
    with s.atomic_dir(target) as tmp:
        s.write_text(f"{tmp}/old.txt", "old")
    with s.atomic_dir(target) as tmp:
        s.write_text(f"{tmp}/new.txt", "new")
    assert [p.rsplit("/", 1)[-1] for p in s.ls(target)] == ["new.txt"]
    assert [p.rsplit("/", 1)[-1] for p in s.ls(s.root)] == ["art"]


def test_atomic_dir_leaves_nothing_on_exception(any_store: ArtifactStore) -> None:
    s = any_store
    s.makedirs(s.root)
    target = s.join("art")
    with pytest.raises(RuntimeError, match="boom"):
        with s.atomic_dir(target) as tmp:
            s.write_text(f"{tmp}/half.txt", "half")
            raise RuntimeError("boom")
    assert not s.exists(target)
    assert s.ls(s.root) == []


def test_atomic_dir_failure_keeps_previous_version(store: ArtifactStore) -> None:
    target = store.join("art")
    with store.atomic_dir(target) as tmp:
        store.write_text(f"{tmp}/v.txt", "1")
    with pytest.raises(ValueError):
        with store.atomic_dir(target) as tmp:
            store.write_text(f"{tmp}/v.txt", "2")
            raise ValueError
    assert store.read_text(f"{target}/v.txt") == "1"
    assert os.listdir(store.root) == ["art"]


# -- store: errors ----------------------------------------------------------------


def test_read_only_store_gives_actionable_error(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(src: str, dst: str) -> None:
        raise OSError(errno.EROFS, "Read-only file system", dst)

    monkeypatch.setattr(os, "replace", read_only)
    with pytest.raises(ArtifactStoreError) as info:
        store.write_bytes(store.join("f.bin"), b"x")
    message = str(info.value)
    assert "read-only" in message and store.root in message
    assert "conveyor artifact-store update" in message and "--path=" in message
    assert info.value.errno == errno.EROFS
    assert os.listdir(store.root) == []  # the temp file was cleaned up

    with pytest.raises(ArtifactStoreError, match="read-only"):
        save_artifact(1, store.join("a"), store)
    assert os.listdir(store.root) == []


def test_parent_is_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    store = ArtifactStore(str(blocker / "artifacts"))
    with pytest.raises(ArtifactStoreError) as info:
        save_artifact(1, store.join("a"), store)
    assert "regular file" in str(info.value) and str(blocker) in str(info.value)
    with pytest.raises(ArtifactStoreError, match="regular file|not a directory"):
        store.makedirs(store.root)


def test_no_space_left_is_explained(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(ArtifactStoreError, match="out of space"):
        store.write_text(store.join("f"), "x")


def test_permission_denied(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # The suite runs as root, which ignores file modes, so the kernel's answer is simulated.
    def denied(src: str, dst: str) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", denied)
    with pytest.raises(ArtifactStoreError, match="permission denied"):
        store.write_text(store.join("f"), "x")


def test_permission_error_from_remote_backend_is_explained(memory_store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*args: Any, **kwargs: Any) -> None:
        raise PermissionError("Access Denied")

    monkeypatch.setattr(memory_store.fs, "cat_file", denied)
    with pytest.raises(ArtifactStoreError, match="permission denied") as info:
        memory_store.read_bytes(memory_store.join("x"))
    assert info.value.errno == errno.EACCES


def test_unreachable_backend_is_explained(memory_store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*args: Any, **kwargs: Any) -> None:
        raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")

    with monkeypatch.context() as patch:  # undone before the store fixture cleans up
        patch.setattr(memory_store.fs, "exists", down)
        with pytest.raises(ArtifactStoreError, match="unreachable"):
            memory_store.exists(memory_store.join("x"))


def test_missing_file_and_unknown_protocol(any_store: ArtifactStore) -> None:
    with pytest.raises(ArtifactStoreError, match="no such file") as info:
        any_store.read_bytes(any_store.join("nope"))
    assert info.value.errno == errno.ENOENT
    with pytest.raises(ArtifactStoreError, match="unknown protocol"):
        _ = ArtifactStore("nosuchproto://x/y").fs


def test_store_error_pickles_with_attributes() -> None:
    err = ArtifactStoreError("msg", uri="/x", errno=errno.EROFS)
    clone = pickle.loads(pickle.dumps(err))
    assert (str(clone), clone.uri, clone.errno) == ("msg", "/x", errno.EROFS)


# -- materializer selection ------------------------------------------------------


@pytest.mark.parametrize(
    ("data_type", "value", "expected"),
    [
        (int, 3, JSONMaterializer),
        (None, 3, JSONMaterializer),
        (list[int], [1], JSONMaterializer),
        (Optional[int], 3, JSONMaterializer),
        (Annotated[dict, "meta"], {"a": 1}, JSONMaterializer),
        (NewType("UserId", int), 3, JSONMaterializer),
        (Any, b"x", BytesMaterializer),
        (None, bytearray(b"x"), BytesMaterializer),
        (None, {1: "a"}, CloudpickleMaterializer),
        (dict, {1: "a"}, CloudpickleMaterializer),
        (None, np.zeros(2), NumpyMaterializer),
        (np.ndarray, np.zeros(2), NumpyMaterializer),
        (None, np.array([1, "a"], dtype=object), CloudpickleMaterializer),
        (None, np.float32(1.5), NumpyMaterializer),
        (None, pd.DataFrame({"a": [1]}), PandasMaterializer),
        (None, pd.Series([1]), PandasMaterializer),
        (None, Point(x=1, y=2.0), PydanticMaterializer),
        (Point, Point(x=1, y=2.0), PydanticMaterializer),
        (None, PlainThing(1), CloudpickleMaterializer),
        (np.ndarray, [1, 2], JSONMaterializer),  # declared type cannot take the value: use the runtime type
    ],
)
def test_materializer_for(data_type: Any, value: Any, expected: type[BaseMaterializer]) -> None:
    assert materializer_for(data_type, value) is expected


def test_materializer_for_declared_type_only() -> None:
    assert materializer_for(int) is JSONMaterializer
    assert materializer_for(np.ndarray) is NumpyMaterializer
    assert materializer_for(None) is CloudpickleMaterializer
    assert materializer_for(PlainThing) is CloudpickleMaterializer


def test_subclasses_of_builtins_do_not_go_to_json() -> None:
    import enum

    class Color(enum.IntEnum):
        RED = 1

    assert materializer_for(None, Color.RED) is CloudpickleMaterializer


def test_user_materializer_wins_and_most_specific_registration_is_used(
    store: ArtifactStore, clean_registry: None
) -> None:
    @register_materializer
    class IntAsText(BaseMaterializer):
        ASSOCIATED_TYPES = (int,)

        def save(self, data: Any) -> None:
            self.store.write_text(self.path_for("n.txt"), str(data))

        def load(self, data_type: type) -> Any:
            return data_type(self.store.read_text(self.path_for("n.txt")))

    class Base:
        pass

    class Child(Base):
        pass

    @register_materializer
    class ChildMat(BaseMaterializer):
        ASSOCIATED_TYPES = (Child,)

    @register_materializer
    class BaseMat(BaseMaterializer):
        ASSOCIATED_TYPES = (Base,)

    assert materializer_for(None, 7) is IntAsText
    assert materializer_for(None, Child()) is ChildMat
    assert materializer_for(Base) is BaseMat
    uri = store.join("n")
    meta = save_artifact(41, uri, store)
    assert os.listdir(uri) == sorted(os.listdir(uri)) and "n.txt" in os.listdir(uri)
    assert meta.materializer.endswith("IntAsText")


def test_user_materializer_for_an_abc(clean_registry: None) -> None:
    from collections.abc import Mapping

    @register_materializer
    class MappingMat(BaseMaterializer):
        ASSOCIATED_TYPES = (Mapping,)

    assert materializer_for(None, {"a": 1}) is MappingMat


def test_register_rejects_bad_materializers(clean_registry: None) -> None:
    class NoTypes(BaseMaterializer):
        pass

    with pytest.raises(TypeError, match="ASSOCIATED_TYPES"):
        register_materializer(NoTypes)
    with pytest.raises(TypeError, match="BaseMaterializer"):
        register_materializer(int)  # type: ignore[arg-type]


def test_import_path_round_trip() -> None:
    assert import_path(Point) == f"{__name__}:Point"
    assert load_import_path(import_path(Point)) is Point
    assert load_import_path("builtins:NoneType") is type(None)
    assert load_import_path("collections.OrderedDict").__name__ == "OrderedDict"
    with pytest.raises(ImportError, match="cannot import module"):
        load_import_path("no_such_module_xyz:Thing")
    with pytest.raises(ImportError, match="does not exist"):
        load_import_path(f"{__name__}:NoSuchThing")


# -- round-trips ------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**70),
        1.5,
        float("inf"),
        "",
        "héllo \udcff",
        [],
        {},
        (),
        set(),
        frozenset({1, 2}),
        (1, ("nested", [2, {3}])),
        {"a": [1, 2.5, None], "b": {"c": (True, "x")}},
        {"__conveyor__": "tuple", "items": [1]},  # a user dict that looks like our tag
        [{"__conveyor__": {"__conveyor__": 1}}],
        {3, "3", (3,)},
    ],
)
def test_json_round_trip(value: Any, any_store: ArtifactStore) -> None:
    with no_warnings():
        loaded, meta = roundtrip(value, any_store)
    assert loaded == value and type(loaded) is type(value)
    assert meta.materializer == import_path(JSONMaterializer)


def test_json_files_are_plain_json(store: ArtifactStore) -> None:
    uri = store.join("t")
    save_artifact({"a": (1, 2)}, uri, store)
    assert json.loads(Path(uri, "data.json").read_text()) == {"a": {"__conveyor__": "tuple", "items": [1, 2]}}


def test_equal_sets_get_equal_checksums(store: ArtifactStore) -> None:
    a = save_artifact({"b", "a", "c"}, store.join("a"), store)
    b = save_artifact({"c", "b", "a"}, store.join("b"), store)
    assert a.checksum == b.checksum


def test_huge_int_falls_back(store: ArtifactStore) -> None:
    with pytest.warns(UserWarning, match="int"):
        loaded, meta = roundtrip(10**5000, store)
    assert loaded == 10**5000 and meta.materializer == import_path(CloudpickleMaterializer)


def test_self_referencing_list_falls_back_to_pickle(store: ArtifactStore) -> None:
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    with pytest.warns(UserWarning, match="'list'"):
        loaded, _ = roundtrip(cyclic, store)
    assert loaded[1] is loaded


def test_non_str_dict_keys_fall_back_to_pickle(any_store: ArtifactStore) -> None:
    with pytest.warns(UserWarning, match="No materializer for type 'dict'.*str dict keys"):
        loaded, meta = roundtrip({1: "a", (2, 3): "b"}, any_store)
    assert loaded == {1: "a", (2, 3): "b"}
    assert meta.materializer == import_path(CloudpickleMaterializer)


@pytest.mark.parametrize("value", [b"", b"\x00\xffbytes", bytearray(b"abc")])
def test_bytes_round_trip(value: Any, any_store: ArtifactStore) -> None:
    loaded, meta = roundtrip(value, any_store)
    assert loaded == value and type(loaded) is type(value)
    assert meta.size == len(value)


def test_bytes_file_is_raw(store: ArtifactStore) -> None:
    uri = store.join("b")
    save_artifact(b"raw", uri, store)
    assert Path(uri, "data.bin").read_bytes() == b"raw"


def test_numpy_round_trip_is_memory_mapped(store: ArtifactStore) -> None:
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    with no_warnings():
        loaded, meta = roundtrip(arr, store)
    assert isinstance(loaded, np.memmap)
    assert loaded.dtype == np.float32 and loaded.shape == (3, 4)
    np.testing.assert_array_equal(loaded, arr)
    assert Path(store.join("run", "out", "data.npy")).exists()
    assert meta.data_type == "numpy:ndarray"
    loaded += 1  # copy-on-write: a step may change its input in place...
    np.testing.assert_array_equal(loaded, arr + 1)
    stored = load_artifact(store.join("run", "out"), store, meta.materializer, meta.data_type)
    np.testing.assert_array_equal(stored, arr)  # ...and the stored artifact stays as it was


def test_numpy_non_contiguous_empty_and_structured(store: ArtifactStore) -> None:
    cases = [
        np.arange(20).reshape(4, 5)[:, ::2],
        np.zeros((0, 3)),
        np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
        np.array(["x", "yz"]),
    ]
    for i, arr in enumerate(cases):
        loaded, _ = roundtrip(arr, store, name=f"a{i}")
        np.testing.assert_array_equal(loaded, arr)
        assert loaded.dtype == arr.dtype


def test_numpy_memmap_value_round_trips(store: ArtifactStore) -> None:
    first, _ = roundtrip(np.arange(5), store, name="a")
    again, meta = roundtrip(first, store, name="b")
    assert isinstance(again, np.memmap)
    np.testing.assert_array_equal(again, np.arange(5))


def test_numpy_scalar_round_trip(store: ArtifactStore) -> None:
    loaded, _ = roundtrip(np.float32(1.25), store)
    assert loaded == np.float32(1.25) and type(loaded) is np.float32


def test_numpy_on_remote_store_loads_into_memory(memory_store: ArtifactStore) -> None:
    arr = np.linspace(0, 1, 7)
    loaded, meta = roundtrip(arr, memory_store)
    np.testing.assert_array_equal(loaded, arr)
    assert meta.materializer == import_path(NumpyMaterializer)


def test_object_array_falls_back_with_reason(store: ArtifactStore) -> None:
    arr = np.array([{"a": 1}, None], dtype=object)
    with pytest.warns(UserWarning, match="numpy.ndarray.*object-dtype"):
        loaded, meta = roundtrip(arr, store)
    assert meta.materializer == import_path(CloudpickleMaterializer)
    assert list(loaded) == [{"a": 1}, None]


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "i": [1, 2, 3],
            "f": [0.5, None, 2.5],
            "s": ["a", "b", None],
            "t": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]),
            "c": pd.Categorical(["x", "y", "x"]),
        },
        index=pd.Index([10, 20, 30], name="key"),
    )


def test_dataframe_round_trip_via_parquet(any_store: ArtifactStore) -> None:
    df = _frame()
    with no_warnings():
        loaded, meta = roundtrip(df, any_store)
    pd.testing.assert_frame_equal(loaded, df)
    assert meta.materializer == import_path(PandasMaterializer)
    assert any_store.exists(any_store.join("run", "out", "data.parquet"))


def test_dataframe_attrs_and_int_columns_survive(store: ArtifactStore) -> None:
    df = pd.DataFrame({0: [1], 1: ["a"]})
    df.attrs = {"source": "unit"}
    loaded, _ = roundtrip(df, store)
    pd.testing.assert_frame_equal(loaded, df)
    assert loaded.attrs == {"source": "unit"}


@pytest.mark.parametrize("name", [None, "price", 3])
def test_series_round_trip(name: Any, store: ArtifactStore) -> None:
    series = pd.Series([1.0, 2.0, 3.0], index=["a", "b", "c"], name=name)
    loaded, meta = roundtrip(series, store)
    assert meta.materializer == import_path(PandasMaterializer)
    pd.testing.assert_series_equal(loaded, series)
    assert loaded.attrs == {}


def test_dataframe_parquet_cannot_hold_falls_back(store: ArtifactStore) -> None:
    df = pd.DataFrame({"mixed": [1, "x", 2.5]}, dtype=object)
    with pytest.warns(UserWarning, match="pandas.*DataFrame.*Parquet cannot hold it"):
        loaded, meta = roundtrip(df, store)
    assert meta.materializer == import_path(CloudpickleMaterializer)
    pd.testing.assert_frame_equal(loaded, df)
    assert os.listdir(store.join("run")) == ["out"]  # no debris from the failed Parquet attempt


def test_dataframe_without_pyarrow_falls_back_with_hint(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_builtin, "_have_pyarrow", lambda: False)
    with pytest.warns(UserWarning, match="install pyarrow"):
        loaded, meta = roundtrip(_frame(), store)
    assert meta.materializer == import_path(CloudpickleMaterializer)
    pd.testing.assert_frame_equal(loaded, _frame())


def test_pydantic_round_trip(any_store: ArtifactStore) -> None:
    scene = Scene(name="s", points=[Point(x=1, y=2.5, tags=["a"]), Point(x=3, y=4.0)], meta={"k": 1})
    with no_warnings():
        loaded, meta = roundtrip(scene, any_store)
    assert loaded == scene and type(loaded) is Scene
    assert meta.data_type == import_path(Scene)
    assert json.loads(any_store.read_text(any_store.join("run", "out", "data.json")))["name"] == "s"


def test_pydantic_subclass_is_loaded_as_recorded_class(store: ArtifactStore) -> None:
    loaded, meta = roundtrip(Point3(x=1, y=1.0, z=5), store, data_type=Point)
    assert type(loaded) is Point3 and loaded.z == 5
    assert meta.data_type == import_path(Point3)


def test_cloudpickle_fallback_warns_with_type_name(any_store: ArtifactStore) -> None:
    with pytest.warns(UserWarning, match=rf"No materializer for type '{__name__}.PlainThing'.*cloudpickle") as record:
        loaded, meta = roundtrip(PlainThing(5), any_store)
    assert loaded == PlainThing(5)
    assert "Python and library version" in str(record[0].message)
    assert record[0].filename == __file__  # points at the caller, not at conveyor internals
    assert meta.materializer == import_path(CloudpickleMaterializer)
    assert any_store.exists(any_store.join("run", "out", "data.pkl"))


def test_cloudpickle_handles_local_classes(store: ArtifactStore) -> None:
    class Local:
        def __init__(self) -> None:
            self.v = 3

    with pytest.warns(UserWarning, match="Local"):
        uri = store.join("l")
        meta = save_artifact(Local(), uri, store)
    assert "<locals>" in meta.data_type
    assert load_artifact(uri, store, meta.materializer, meta.data_type).v == 3


def test_unpickling_failure_says_which_python_wrote_it(store: ArtifactStore) -> None:
    with pytest.warns(UserWarning):
        meta = save_artifact(PlainThing(1), store.join("p"), store)
    Path(store.join("p", "data.pkl")).write_bytes(b"garbage!")
    with pytest.raises(Exception) as info:
        load_artifact(store.join("p"), store, meta.materializer, meta.data_type, verify=False)
    assert any("pickled under Python" in note for note in getattr(info.value, "__notes__", []))


# -- manifest, atomicity and corruption ---------------------------------------------


def test_manifest_records_files(store: ArtifactStore) -> None:
    uri = store.join("m")
    meta = save_artifact({"a": 1}, uri, store)
    manifest = json.loads(Path(uri, MANIFEST_NAME).read_text())
    assert manifest["materializer"] == meta.materializer
    assert manifest["data_type"] == "builtins:dict"
    assert set(manifest["files"]) == {"data.json"}
    assert manifest["files"]["data.json"]["size"] == meta.size == len(Path(uri, "data.json").read_bytes())
    assert len(meta.checksum) == 64
    assert load_artifact(uri, store) == {"a": 1}  # materializer and type default to the manifest's


def test_overwriting_an_artifact(any_store: ArtifactStore) -> None:
    uri = any_store.join("o")
    save_artifact(b"first", uri, any_store)
    save_artifact([1, 2], uri, any_store)
    assert load_artifact(uri, any_store) == [1, 2]
    assert not any_store.exists(f"{uri}/data.bin")


def test_failed_save_leaves_nothing(any_store: ArtifactStore, clean_registry: None) -> None:
    class Exploding:
        pass

    @register_materializer
    class HalfWriter(BaseMaterializer):
        ASSOCIATED_TYPES = (Exploding,)

        def save(self, data: Any) -> None:
            self.store.write_bytes(self.path_for("part.bin"), b"half")
            raise RuntimeError("disk hiccup")

    uri = any_store.join("run", "x")
    with pytest.raises(RuntimeError, match="disk hiccup"):
        save_artifact(Exploding(), uri, any_store)
    assert not any_store.exists(uri)
    assert any_store.ls(any_store.join("run")) == []


def test_os_error_inside_a_materializer_becomes_store_error(store: ArtifactStore, clean_registry: None) -> None:
    @register_materializer
    class DiskFiller(BaseMaterializer):
        ASSOCIATED_TYPES = (PlainThing,)

        def save(self, data: Any) -> None:
            with open(self.path_for("big.bin"), "wb") as fh:
                fh.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", self.path_for("big.bin"))

    with pytest.raises(ArtifactStoreError, match="out of space.*big.bin"):
        save_artifact(PlainThing(1), store.join("run", "x"), store)
    assert os.listdir(store.join("run")) == []


def test_remote_commit_moves_manifest_last(memory_store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Object stores have no directory rename; the manifest arriving last is what makes it safe."""
    moved: list[str] = []
    real_mv = memory_store.fs.mv

    def recording_mv(src: str, dst: str, **kwargs: Any) -> None:
        moved.append(dst.rsplit("/", 1)[-1])
        real_mv(src, dst, **kwargs)

    monkeypatch.setattr(memory_store.fs, "mv", recording_mv)
    with pytest.warns(UserWarning):
        save_artifact(PlainThing(1), memory_store.join("p"), memory_store)
    assert moved[-1] == MANIFEST_NAME and set(moved) == {"data.pkl", "env.json", MANIFEST_NAME}


def test_materializer_can_decline_a_value(store: ArtifactStore, clean_registry: None) -> None:
    @register_materializer
    class Picky(BaseMaterializer):
        ASSOCIATED_TYPES = (PlainThing,)

        def save(self, data: Any) -> None:
            raise CannotMaterialize("too picky")

    with pytest.warns(UserWarning, match="too picky"):
        loaded, meta = roundtrip(PlainThing(2), store)
    assert loaded == PlainThing(2) and meta.materializer == import_path(CloudpickleMaterializer)


def test_truncated_file_is_detected(any_store: ArtifactStore) -> None:
    uri = any_store.join("arr")
    meta = save_artifact(np.arange(100), uri, any_store)
    path = f"{uri}/data.npy"
    data = any_store.read_bytes(path)
    with any_store.open(path, "wb") as fh:
        fh.write(data[:-40])
    with pytest.raises(ArtifactCorruptedError) as info:
        load_artifact(uri, any_store, meta.materializer, meta.data_type)
    message = str(info.value)
    assert uri in message and "data.npy" in message
    assert f"expected {len(data)} bytes, got {len(data) - 40}" in message
    assert "re-run the producing step" in message


def test_flipped_byte_is_detected(store: ArtifactStore) -> None:
    uri = store.join("j")
    meta = save_artifact("abcdef", uri, store)
    target = Path(uri, "data.json")
    target.write_bytes(target.read_bytes().replace(b"c", b"C"))
    with pytest.raises(ArtifactCorruptedError, match="data.json expected sha256 [0-9a-f]{64}, got [0-9a-f]{64}"):
        load_artifact(uri, store, meta.materializer, meta.data_type)
    assert load_artifact(uri, store, verify=False) == "abCdef"


def test_missing_data_file_and_bad_manifest(store: ArtifactStore) -> None:
    uri = store.join("j")
    save_artifact([1], uri, store)
    Path(uri, "data.json").unlink()
    with pytest.raises(ArtifactCorruptedError, match="data.json expected 3 bytes, but it is missing"):
        load_artifact(uri, store)
    Path(uri, MANIFEST_NAME).write_text("{trunc")
    with pytest.raises(ArtifactCorruptedError, match="unreadable"):
        load_artifact(uri, store)


def test_missing_artifact_names_the_uri(any_store: ArtifactStore) -> None:
    uri = any_store.join("never", "written")
    with pytest.raises(ArtifactStoreError) as info:
        load_artifact(uri, any_store, import_path(JSONMaterializer), "builtins:int")
    assert f"no artifact at {uri}" in str(info.value)
    assert info.value.uri == uri


def test_unimportable_materializer_or_type(store: ArtifactStore) -> None:
    uri = store.join("j")
    save_artifact(1, uri, store)
    with pytest.raises(ImportError, match="needs materializer nope_mod:Mat"):
        load_artifact(uri, store, "nope_mod:Mat", "builtins:int")
    with pytest.raises(ImportError, match="holds a nope_mod:Type"):
        load_artifact(uri, store, import_path(PydanticMaterializer), "nope_mod:Type")


# -- property test ------------------------------------------------------------------

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_hashables = st.recursive(_scalars, lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3), max_leaves=6)
_keys = st.text(max_size=8) | st.just("__conveyor__") | st.just("items")
_json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(_keys, inner, max_size=4)
        | st.tuples(inner, inner)
        | st.lists(inner, max_size=3).map(tuple)
        | st.sets(_hashables, max_size=4)
        | st.frozensets(_hashables, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_json_values)
def test_json_values_round_trip_property(value: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    store = ArtifactStore(str(tmp_path_factory.getbasetemp() / "prop"))
    uri = store.join(uuid.uuid4().hex)
    with no_warnings():
        meta = save_artifact(value, uri, store)
    assert meta.materializer == import_path(JSONMaterializer)
    loaded = load_artifact(uri, store, meta.materializer, meta.data_type)
    assert loaded == value
    assert _shape(loaded) == _shape(value)


def _shape(value: Any) -> Any:
    """Types all the way down, since 1 == 1.0 == True would hide a lost type."""
    if isinstance(value, dict):
        return ("dict", [(k, _shape(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_shape(v) for v in value])
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, sorted(repr(_shape(v)) for v in value))
    return type(value).__name__


# -- import hygiene and overhead -----------------------------------------------------


def _run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_import_is_light() -> None:
    heavy = ("numpy", "pandas", "pyarrow", "cloudpickle", "fsspec", "pydantic")
    code = (
        "import sys, conveyor.artifacts\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    assert _run_python(code) == "[]"


def test_small_values_on_local_store_stay_light(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from conveyor.artifacts import ArtifactStore, save_artifact, load_artifact\n"
        f"s = ArtifactStore({str(tmp_path)!r})\n"
        "for i, v in enumerate([1, 'x', b'y', (1, {2})]):\n"
        "    m = save_artifact(v, s.join(str(i)), s)\n"
        "    assert load_artifact(s.join(str(i)), s, m.materializer, m.data_type) == v\n"
        "print(sorted(m for m in ('numpy', 'pandas', 'pyarrow', 'cloudpickle', 'fsspec', 'pydantic') if m in sys.modules))"
    )
    assert _run_python(code) == "[]"
