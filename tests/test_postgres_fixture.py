"""The suite's own PostgreSQL server works end to end through SQLAlchemy + psycopg 3."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fixtures.engines import require_or_skip


def test_server_is_postgresql(postgres_db_url: str) -> None:
    engine = sa.create_engine(postgres_db_url)
    try:
        with engine.connect() as conn:
            version = conn.execute(sa.text("SELECT version()")).scalar_one()
    finally:
        engine.dispose()
    assert "PostgreSQL" in version


def test_table_roundtrip(postgres_db_url: str) -> None:
    engine = sa.create_engine(postgres_db_url)
    meta = sa.MetaData()
    steps = sa.Table(
        "steps",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
    )
    try:
        meta.create_all(engine)
        with engine.begin() as conn:
            conn.execute(steps.insert(), [{"name": "load"}, {"name": "train"}])
        with engine.connect() as conn:
            rows = conn.execute(sa.select(steps.c.name).order_by(steps.c.id)).scalars().all()
    finally:
        engine.dispose()
    assert rows == ["load", "train"]


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_require_or_skip_fails_only_in_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="no server"):
        require_or_skip("no server")
