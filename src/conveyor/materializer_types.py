"""Type <-> import-path helpers that cost no imports."""

from __future__ import annotations

from typing import Any


def type_path(tp: Any) -> str:
    if tp is None or tp is Any or not isinstance(tp, type):
        return "typing:Any"
    if tp.__module__ == "__main__":  # the running script's class, by the name a step's process imports it by
        from conveyor.pipelines.main_script import import_path

        return import_path(tp)
    return f"{tp.__module__}:{tp.__qualname__}"
