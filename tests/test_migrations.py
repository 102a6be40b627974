"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

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


def _check_versions_backfill(url: str) -> None:
    """Existing models get versions 1, 2, ... by creation order, per project."""
    cfg = alembic_config(url)
    command.upgrade(cfg, "0005")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO tenants (id, name, created_at) VALUES ('t', 't', :now)"),
                {"now": "2026-01-01"},
            )
            for pid in ("p1", "p2"):
                conn.execute(
                    text(
                        "INSERT INTO projects (id, tenant_id, name, description, created_at) "
                        "VALUES (:id, 't', :id, '', '2026-01-01')"
                    ),
                    {"id": pid},
                )
            # (model id, project, created at): ids deliberately not in creation order.
            rows = [("m_c", "p1", "2026-01-01 10:00"), ("m_a", "p1", "2026-01-01 12:00"),
                    ("m_b", "p1", "2026-01-01 11:00"), ("m_d", "p2", "2026-01-02 09:00")]  # fmt: skip
            for mid, pid, at in rows:
                conn.execute(
                    text("INSERT INTO jobs (id, project_id, method, backbone, params, status, "
                         "progress, stage, history, cancel_requested, attempts, created_at) "
                         "VALUES (:j, :p, 'knn', 'b', '{}', 'succeeded', 1, 'done', '[]', "
                         "false, 1, :at)"),
                    {"j": "j" + mid, "p": pid, "at": at},
                )  # fmt: skip
                conn.execute(
                    text("INSERT INTO models (id, project_id, job_id, method, backbone, classes, "
                         "metrics, artifact_prefix, created_at) VALUES (:m, :p, :j, 'knn', 'b', "
                         "'[]', '{}', 'x', :at)"),
                    {"m": mid, "p": pid, "j": "j" + mid, "at": at},
                )  # fmt: skip
        command.upgrade(cfg, "head")
        with engine.connect() as conn:
            versions = dict(conn.execute(text("SELECT id, version FROM models")).all())
            last = dict(conn.execute(text("SELECT id, last_model_version FROM projects")).all())
            promote = set(conn.execute(text("SELECT promote FROM jobs")).scalars())
        assert versions == {"m_c": 1, "m_b": 2, "m_a": 3, "m_d": 1}
        assert last == {"p1": 3, "p2": 1}
        assert promote == {"auto"}
        command.downgrade(cfg, "base")
    finally:
        engine.dispose()


def test_model_versions_backfilled_on_sqlite(tmp_path: Path) -> None:
    _check_versions_backfill(f"sqlite:///{tmp_path / 'v.sqlite'}")


@pytest.mark.integration
def test_model_versions_backfilled_on_postgres(postgres_redis: dict[str, str]) -> None:
    _check_versions_backfill(postgres_redis["database_url"])
