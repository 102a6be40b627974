"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.cli import alembic_config
from app.db.base import Base


def _check(url: str) -> None:
    cfg = alembic_config(url)
    command.upgrade(cfg, "head")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert diff == [], f"models and migrations disagree: {diff}"
            assert {"projects", "images", "jobs", "models", "api_keys", "tenants"} <= set(
                inspect(conn).get_table_names()
            )
        command.downgrade(cfg, "base")
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()


def test_migrations_match_models_on_sqlite(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'm.sqlite'}")


@pytest.mark.integration
def test_migrations_match_models_on_postgres(postgres_redis: dict[str, str]) -> None:
    _check(postgres_redis["database_url"])
