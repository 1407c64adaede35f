"""Merging settings dicts: pure Python, so compiling a pipeline without settings never loads pydantic."""

from __future__ import annotations

from typing import Any, Mapping


def merge_settings(pipeline_level: Mapping[str, Mapping[str, Any]],
                   step_level: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Step-level fields win over pipeline-level ones, key by key and field by field."""
    merged = {k: dict(v) for k, v in pipeline_level.items()}
    for key, fields in step_level.items():
        merged.setdefault(key, {}).update(fields)
    return merged


def normalize(settings: Any, where: str) -> dict[str, dict[str, Any]]:
    """Validation needs pydantic; no settings (the common case) needs nothing."""
    if not settings:
        return {}
    from conveyor.config.settings import normalize_settings

    return normalize_settings(settings, where)
