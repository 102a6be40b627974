"""model versions, aliases and their history, promotion policy

Models get a per-project ``version`` (1, 2, ... by creation order, backfilled); projects
remember the last version given out; jobs their ``promote`` policy and what it did.

Revision ID: 0006_versions
Revises: 0005
Create Date: 2026-12-01 23:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_versions"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.add_column(
            sa.Column("last_model_version", sa.Integer(), server_default="0", nullable=False)
        )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("promote", sa.String(length=8), server_default="auto", nullable=False)
        )
        batch.add_column(sa.Column("promotion", sa.JSON(), nullable=True))
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("labeled_images", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("promotion", sa.JSON(), nullable=True))
    # Backfill: each project's models numbered by creation order (ids break ties).
    op.execute(
        "UPDATE models SET version = (SELECT COUNT(*) FROM models AS m2 "
        "WHERE m2.project_id = models.project_id AND (m2.created_at < models.created_at "
        "OR (m2.created_at = models.created_at AND m2.id <= models.id)))"
    )
    op.execute(
        "UPDATE projects SET last_model_version = COALESCE((SELECT MAX(m.version) "
        "FROM models AS m WHERE m.project_id = projects.id), 0)"
    )
    with op.batch_alter_table("models") as batch:
        batch.alter_column("version", existing_type=sa.Integer(), nullable=False)
        batch.create_unique_constraint(op.f("uq_models_project_id"), ["project_id", "version"])

    op.create_table(
        "model_aliases",
        sa.Column("project_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("model_id", sa.String(length=40), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_model_aliases_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", "name", name=op.f("pk_model_aliases")),
    )
    op.create_table(
        "alias_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(length=40), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("from_model_id", sa.String(length=40), nullable=True),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_model_id", sa.String(length=40), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=True),
        sa.Column("api_key_id", sa.String(length=40), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_alias_events_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alias_events")),
    )
    op.create_index(
        "ix_alias_events_project_id_alias", "alias_events", ["project_id", "alias"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_alias_events_project_id_alias", table_name="alias_events")
    op.drop_table("alias_events")
    op.drop_table("model_aliases")
    with op.batch_alter_table("models") as batch:
        batch.drop_constraint(op.f("uq_models_project_id"), type_="unique")
        batch.drop_column("promotion")
        batch.drop_column("labeled_images")
        batch.drop_column("version")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("promotion")
        batch.drop_column("promote")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("last_model_version")
