"""stored predictions and their feedback; per-project opt-in and retention

Revision ID: 0008_predictions
Revises: 0007_enqueued_at
Create Date: 2026-12-02 00:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_predictions"
down_revision: str | None = "0007_enqueued_at"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.add_column(
            sa.Column("store_predictions", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(
            sa.Column(
                "prediction_retention_days", sa.Integer(), server_default="30", nullable=False
            )
        )
    op.create_table(
        "stored_predictions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("project_id", sa.String(length=40), nullable=False),
        sa.Column("model_id", sa.String(length=40), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=True),
        sa.Column("top_label", sa.String(length=100), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("rejected", sa.Boolean(), nullable=False),
        sa.Column("feedback", sa.String(length=16), nullable=True),
        sa.Column("feedback_label", sa.String(length=100), nullable=True),
        sa.Column("image_id", sa.String(length=40), nullable=True),
        sa.Column("feedback_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_stored_predictions_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stored_predictions")),
    )
    op.create_index(
        "ix_stored_predictions_project_id_created_at",
        "stored_predictions",
        ["project_id", "created_at"],
    )
    op.create_index(
        "ix_stored_predictions_project_id_sha256", "stored_predictions", ["project_id", "sha256"]
    )
    op.create_index(op.f("ix_stored_predictions_model_id"), "stored_predictions", ["model_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_stored_predictions_model_id"), table_name="stored_predictions")
    op.drop_index("ix_stored_predictions_project_id_sha256", table_name="stored_predictions")
    op.drop_index("ix_stored_predictions_project_id_created_at", table_name="stored_predictions")
    op.drop_table("stored_predictions")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("prediction_retention_days")
        batch.drop_column("store_predictions")
