"""The schema revision the code expects, in a module light enough for the run path: comparing it with the
database's `alembic_version` must not import SQLAlchemy or Alembic."""

from __future__ import annotations

__all__ = ["SCHEMA_HEAD"]

# Bump together with a new file in migrations/versions; a test checks they agree.
SCHEMA_HEAD = "0005"
