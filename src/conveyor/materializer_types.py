"""Type <-> import-path helpers that cost no imports."""

from __future__ import annotations

from typing import Any


def type_path(tp: Any) -> str:
    if tp is None or tp is Any or not isinstance(tp, type):
        return "typing:Any"
    return f"{tp.__module__}:{tp.__qualname__}"
