"""drift_alerts: one row per model and monitoring window that sent model.drift

Revision ID: 0011_drift_alerts
Revises: 0010_job_queue
Create Date: 2026-12-02 08:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_drift_alerts"
down_revision: str | None = "0010_job_queue"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "drift_alerts",
        sa.Column("model_id", sa.String(length=40), nullable=False),
        sa.Column("window", sa.String(length=8), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("drift_score", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
            name=op.f("fk_drift_alerts_model_id_models"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("model_id", "window", "window_start", name=op.f("pk_drift_alerts")),
    )


def downgrade() -> None:
    op.drop_table("drift_alerts")
