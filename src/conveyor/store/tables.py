"""The store's tables as plain names, for the hand-written SQL of `store.py` (schema.py, the SQLAlchemy version
Alembic compares against, stays the definition; a test checks the two agree).

Column lists are spelled out, never `SELECT *`: a column added by a migration sits last in the database file, and
rows must keep the key order they had when SQLAlchemy listed the model's columns."""

from __future__ import annotations

__all__ = ["COLUMNS", "JSON_COLUMNS", "cols"]

COLUMNS: dict[str, tuple[str, ...]] = {
    "flavors": ("id", "type", "name", "source", "created"),
    "components": ("id", "type", "name", "flavor", "config", "created", "updated"),
    "stacks": ("id", "name", "created", "updated"),
    "stack_components": ("stack_id", "component_id", "position"),
    "secrets": ("id", "name", "keys", "value", "created", "updated"),
    "kv": ("key", "value"),
    "pipelines": ("id", "name", "created"),
    "snapshots": ("id", "pipeline_id", "spec_hash", "spec", "created"),
    "runs": ("id", "name", "pipeline_id", "snapshot_id", "stack_name", "status", "start_time", "end_time", "host",
             "pid", "pid_start", "heartbeat", "stop_requested", "error", "created"),
    "step_runs": ("id", "run_id", "name", "position", "status", "start_time", "end_time", "attempt", "cache_key",
                  "operator", "operator_flavor", "config", "submission", "error", "failure_kind", "traceback",
                  "logs_uri", "cached_from"),
    "artifacts": ("id", "uri", "materializer", "data_type", "checksum", "size", "producer_step_run_id", "created",
                  "name", "version", "version_number"),
    "step_run_artifacts": ("step_run_id", "direction", "name", "artifact_id"),
    "run_metadata": ("id", "run_id", "step_run_id", "artifact_id", "key", "value", "created"),
    "step_attempts": ("id", "step_run_id", "number", "status", "failure_kind", "submitted", "queued", "queue_reason",
                      "started", "finished", "published", "backend_job_id", "host", "image_digest", "code_hash",
                      "requested", "peak_rss_bytes", "cpu_seconds", "operator", "operator_flavor", "error",
                      "traceback", "logs_uri"),
}

#: the columns declared JSON: values written there are JSON-encoded (None as JSON null, as SQLAlchemy's JSON did)
JSON_COLUMNS: dict[str, frozenset[str]] = {
    "components": frozenset({"config"}),
    "secrets": frozenset({"keys"}),
    "snapshots": frozenset({"spec"}),
    "step_runs": frozenset({"config", "submission"}),
    "run_metadata": frozenset({"value"}),
    "step_attempts": frozenset({"requested"}),
}


def cols(table: str, *, skip: tuple[str, ...] = (), rename: dict[str, str] | None = None) -> str:
    """`table.a, table.b, ...` for a SELECT list (`rename`: column -> label)."""
    rename = rename or {}
    return ", ".join(f"{table}.{c} AS {rename[c]}" if c in rename else f"{table}.{c}"
                     for c in COLUMNS[table] if c not in skip)
