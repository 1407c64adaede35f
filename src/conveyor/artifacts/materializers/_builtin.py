"""Materializers shipped with Conveyor.

numpy, pandas and pydantic types are recognised through ``sys.modules``: a
value of such a type means its library is already imported, so detection never
pays for an import that the user's code did not already make.
"""

from __future__ import annotations

import io
import json
import sys
from functools import cache
from types import ModuleType
from typing import Any, ClassVar

from conveyor.artifacts.materializers._base import BaseMaterializer, CannotMaterialize
from conveyor.artifacts.store import ArtifactStore

__all__ = [
    "BUILTIN_MATERIALIZERS",
    "BytesMaterializer",
    "CloudpickleMaterializer",
    "JSONMaterializer",
    "NumpyMaterializer",
    "PandasMaterializer",
    "PydanticMaterializer",
    "fallback_hint",
]


class _BuiltinMaterializer(BaseMaterializer):
    """Shared plumbing: built-ins write straight into the (already private) temporary directory.

    They hash what they write from memory as they write it (``digests``: file name -> (size, sha256 hex)), so the
    manifest need not read the files back; a file missing there is hashed from disk.
    """

    def __init__(self, uri: str, store: ArtifactStore) -> None:
        super().__init__(uri, store)
        self.digests: dict[str, tuple[int, str]] = {}

    @classmethod
    def why_not(cls, value: Any) -> str:
        """Why ``can_save`` refused ``value``, for the fallback warning."""
        return ""

    def _write(self, name: str, data: bytes) -> None:
        import hashlib

        with self.store.open(self.path_for(name), "wb") as fh:
            fh.write(data)
        self.digests[name] = (len(data), hashlib.sha256(data).hexdigest())

    def _read(self, name: str) -> bytes:
        return self.store.read_bytes(self.path_for(name))


# -- JSON -----------------------------------------------------------------------

_TAG = "__conveyor__"
_SCALARS = frozenset({type(None), bool, int, float, str})
_JSON_TYPES = (type(None), bool, int, float, str, list, dict, tuple, set, frozenset)
# Python refuses int->str conversion past ~4300 digits; leave room below that.
_MAX_INT_BITS = 13_000


class _NotJSON(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _encode(value: Any) -> Any:
    """Map a value onto plain JSON, tagging tuples/sets so their type survives."""
    kind = type(value)
    if kind in _SCALARS:
        if kind is int and value.bit_length() > _MAX_INT_BITS:
            raise _NotJSON("the int is too large for JSON")
        return value
    if kind is list:
        return [_encode(v) for v in value]
    if kind is dict:
        return _encode_dict(value)
    if kind is tuple:
        return {_TAG: "tuple", "items": [_encode(v) for v in value]}
    if kind is set or kind is frozenset:
        items = sorted((_encode(v) for v in value), key=_sort_key)
        return {_TAG: kind.__name__, "items": items}
    raise _NotJSON(f"it contains a {kind.__module__}.{kind.__qualname__}")


def _encode_dict(value: dict[Any, Any]) -> Any:
    out: dict[str, Any] = {}
    for key, item in value.items():
        if type(key) is not str:
            raise _NotJSON(f"JSON needs str dict keys, got a {type(key).__qualname__} key")
        out[key] = _encode(item)
    if _TAG in out:
        # Pairs, not an object: the decoder's object_hook must not mistake it for a tag.
        return {_TAG: "dict", "items": [[k, v] for k, v in out.items()]}
    return out


def _sort_key(encoded: Any) -> str:
    """Deterministic set order, so equal sets give equal checksums."""
    return json.dumps(encoded, sort_keys=True)


def _decode(obj: dict[str, Any]) -> Any:
    kind = obj.get(_TAG)
    if kind is None:
        return obj
    items = obj["items"]
    if kind == "tuple":
        return tuple(items)
    if kind == "set":
        return set(items)
    if kind == "frozenset":
        return frozenset(items)
    if kind == "dict":
        return {k: v for k, v in items}
    raise ValueError(f"unknown JSON tag {kind!r}")


def _json_fit(value: Any) -> str:
    """'' when ``value`` round-trips through JSON, else the reason it does not."""
    try:
        _encode(value)
    except _NotJSON as exc:
        return exc.reason
    except RecursionError:
        return "it is nested too deeply or refers to itself"
    return ""


class JSONMaterializer(_BuiltinMaterializer):
    """Plain builtins as ``data.json``: readable, diffable and independent of the Python version."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = _JSON_TYPES

    @classmethod
    def handles_type(cls, data_type: type) -> bool:
        # Exact types only: subclasses (IntEnum, namedtuple, ...) would come back as their base.
        return data_type in _JSON_TYPES

    @classmethod
    def can_save(cls, value: Any) -> bool:
        return not _json_fit(value)

    @classmethod
    def why_not(cls, value: Any) -> str:
        return _json_fit(value)

    def save(self, data: Any) -> None:
        try:
            text = json.dumps(_encode(data), separators=(",", ":"))
        except (_NotJSON, RecursionError) as exc:
            raise CannotMaterialize(str(exc) or "it is nested too deeply") from exc
        self._write("data.json", text.encode("ascii"))

    def load(self, data_type: type) -> Any:
        return json.loads(self._read("data.json"), object_hook=_decode)


# -- bytes ----------------------------------------------------------------------


class BytesMaterializer(_BuiltinMaterializer):
    """Raw bytes as ``data.bin``, byte for byte."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = (bytes, bytearray)

    @classmethod
    def handles_type(cls, data_type: type) -> bool:
        return data_type is bytes or data_type is bytearray

    @classmethod
    def can_save(cls, value: Any) -> bool:
        return type(value) is bytes or type(value) is bytearray

    def save(self, data: Any) -> None:
        self._write("data.bin", bytes(data))

    def load(self, data_type: type) -> Any:
        data = self._read("data.bin")
        return bytearray(data) if data_type is bytearray else data


# -- numpy ----------------------------------------------------------------------


def _numpy() -> ModuleType | None:
    return sys.modules.get("numpy")


class NumpyMaterializer(_BuiltinMaterializer):
    """Arrays as ``data.npy``, loaded memory-mapped so large arrays cost no copy on read.

    The map is copy-on-write: the array is writable, and pages a step changes become private to its process.
    Remote stores cannot be mapped; there the array is read into (writable) memory.
    """

    @classmethod
    def handles_type(cls, data_type: type) -> bool:
        np = _numpy()
        if np is None or not isinstance(data_type, type):
            return False
        # Exact array types: np.save drops a MaskedArray's mask or a matrix's type.
        return data_type is np.ndarray or data_type is np.memmap or issubclass(data_type, np.generic)

    @classmethod
    def can_save(cls, value: Any) -> bool:
        return not cls.why_not(value) and cls.handles_type(type(value))

    @classmethod
    def why_not(cls, value: Any) -> str:
        dtype = getattr(value, "dtype", None)
        if dtype is not None and getattr(dtype, "hasobject", False):
            return "object-dtype arrays cannot be stored as .npy without pickle"
        return ""

    def save(self, data: Any) -> None:
        import numpy as np

        from conveyor.artifacts.materializers._npy import write_npy

        target = self.path_for("data.npy")
        with self.store.open(target, "wb") as fh:
            written = write_npy(fh, data)  # one pass: the bytes np.save writes, hashed from memory meanwhile
            if written is not None:
                self.digests["data.npy"] = written
                return
            np.save(fh, data, allow_pickle=False)  # scalars, strided views, long headers: hashed from disk

    def load(self, data_type: type) -> Any:
        import numpy as np

        target = self.path_for("data.npy")
        local = self.store.local_path(target)
        if isinstance(data_type, type) and issubclass(data_type, np.generic):
            source: Any = local if local is not None else io.BytesIO(self.store.read_bytes(target))
            return np.load(source, allow_pickle=False)[()]
        if local is not None:
            # copy-on-write: a step may change its input in place (`x += 1`); the stored file never changes
            return np.load(local, mmap_mode="c", allow_pickle=False)
        return np.load(io.BytesIO(self.store.read_bytes(target)), allow_pickle=False)


# -- pandas ---------------------------------------------------------------------

_SERIES_NAME_KEY = "conveyor.series_name_is_none"


@cache
def _have_pyarrow() -> bool:
    from importlib.util import find_spec

    return find_spec("pyarrow") is not None


def _pandas_kind(data_type: Any) -> str:
    pd = sys.modules.get("pandas")
    if pd is None:
        return ""
    if data_type is getattr(pd, "DataFrame", None):
        return "frame"
    if data_type is getattr(pd, "Series", None):
        return "series"
    return ""


class PandasMaterializer(_BuiltinMaterializer):
    """DataFrames and Series as ``data.parquet``: columnar, typed, readable by other tools."""

    @classmethod
    def handles_type(cls, data_type: type) -> bool:
        return bool(_pandas_kind(data_type))

    @classmethod
    def can_save(cls, value: Any) -> bool:
        return bool(_pandas_kind(type(value))) and _have_pyarrow()

    @classmethod
    def why_not(cls, value: Any) -> str:
        return "" if _have_pyarrow() else "install pyarrow to store it as Parquet"

    def save(self, data: Any) -> None:
        import pyarrow as pa

        frame = data
        if _pandas_kind(type(data)) == "series":
            frame = data.to_frame()
            frame.attrs = {**data.attrs, _SERIES_NAME_KEY: data.name is None}
        target = self.path_for("data.parquet")
        local = self.store.local_path(target)
        try:
            if local is not None:
                frame.to_parquet(local, engine="pyarrow")
            else:
                with self.store.open(target, "wb") as fh:
                    frame.to_parquet(fh, engine="pyarrow")
        except (pa.ArrowException, ValueError, TypeError, NotImplementedError) as exc:
            raise CannotMaterialize(f"Parquet cannot hold it: {exc}") from exc

    def load(self, data_type: type) -> Any:
        import pandas as pd

        target = self.path_for("data.parquet")
        local = self.store.local_path(target)
        source: Any = local if local is not None else io.BytesIO(self.store.read_bytes(target))
        frame = pd.read_parquet(source, engine="pyarrow")
        if _SERIES_NAME_KEY not in frame.attrs:
            return frame
        name_is_none = frame.attrs.pop(_SERIES_NAME_KEY)
        series = frame.iloc[:, 0]
        series.attrs = dict(frame.attrs)
        if name_is_none:
            series.name = None
        return series


# -- pydantic -------------------------------------------------------------------


def _base_model() -> type | None:
    main = sys.modules.get("pydantic.main")
    return getattr(main, "BaseModel", None) if main is not None else None


class PydanticMaterializer(_BuiltinMaterializer):
    """Models as ``data.json`` from ``model_dump_json``, re-validated into the recorded class on load."""

    @classmethod
    def handles_type(cls, data_type: type) -> bool:
        base = _base_model()
        return base is not None and isinstance(data_type, type) and issubclass(data_type, base)

    @classmethod
    def can_save(cls, value: Any) -> bool:
        base = _base_model()
        return base is not None and isinstance(value, base)

    def save(self, data: Any) -> None:
        try:
            text = data.model_dump_json(round_trip=True)
        except Exception as exc:  # pydantic_core.PydanticSerializationError and friends
            raise CannotMaterialize(f"pydantic cannot serialize it: {exc}") from exc
        self._write("data.json", text.encode("utf-8"))

    def load(self, data_type: type) -> Any:
        validate = getattr(data_type, "model_validate_json", None)
        if validate is None:
            raise TypeError(f"cannot load a pydantic artifact into {data_type!r}: it is not a pydantic model class")
        return validate(self._read("data.json"))


# -- fallback -------------------------------------------------------------------


class CloudpickleMaterializer(_BuiltinMaterializer):
    """Anything else, as ``data.pkl``; tied to the Python and library versions that wrote it."""

    def save(self, data: Any) -> None:
        import cloudpickle

        from conveyor.pipelines.main_script import dumps

        # the running script's classes go by its module name, so the value loads as the same class everywhere
        payload = dumps(data)
        self._write("data.pkl", payload)
        env = {"python": sys.version.split()[0], "cloudpickle": cloudpickle.__version__}
        self._write("env.json", json.dumps(env).encode("ascii"))

    def load(self, data_type: type) -> Any:
        from conveyor.pipelines.main_script import loads

        payload = self._read("data.pkl")
        try:
            # Plain pickle suffices (by-value classes import cloudpickle on demand); the modules it imports are
            # imported with pipeline runs prevented, and the running script's module name means the script.
            return loads(payload)
        except Exception as exc:
            exc.add_note(
                f"artifact at {self.uri} was pickled under {self._written_under()}; this is Python "
                f"{sys.version.split()[0]}. Load it with matching versions, or re-run the producing step."
            )
            raise

    def _written_under(self) -> str:
        try:
            env = json.loads(self._read("env.json"))
            return f"Python {env['python']} with cloudpickle {env['cloudpickle']}"
        except Exception:
            return "an unknown environment"


BUILTIN_MATERIALIZERS: tuple[type[_BuiltinMaterializer], ...] = (
    JSONMaterializer,
    BytesMaterializer,
    NumpyMaterializer,
    PandasMaterializer,
    PydanticMaterializer,
)


def fallback_hint(value: Any) -> str:
    """Why a built-in that knows this type still could not take this value ('' if none knows it)."""
    kind = type(value)
    for materializer in BUILTIN_MATERIALIZERS:
        if materializer.handles_type(kind):
            return materializer.why_not(value)
    return ""
