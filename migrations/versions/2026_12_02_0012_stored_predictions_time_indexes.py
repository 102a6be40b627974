"""stored_predictions: indexes for the drift check (model and time; time alone)

The model's monitoring reads its predictions in a time range; the worker's periodic drift
check reads which models have predictions since a time. ``(model_id, created_at)`` replaces
the index on ``model_id`` alone (it serves lookups by model too).

Revision ID: 0012_stored_predictions_time
Revises: 0011_drift_alerts
Create Date: 2026-12-02 15:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012_stored_predictions_time"
down_revision: str | None = "0011_drift_alerts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_stored_predictions_model_id_created_at",
        "stored_predictions",
        ["model_id", "created_at"],
    )
    op.create_index("ix_stored_predictions_created_at", "stored_predictions", ["created_at"])
    op.drop_index(op.f("ix_stored_predictions_model_id"), table_name="stored_predictions")


def downgrade() -> None:
    op.create_index(op.f("ix_stored_predictions_model_id"), "stored_predictions", ["model_id"])
    op.drop_index("ix_stored_predictions_created_at", table_name="stored_predictions")
    op.drop_index("ix_stored_predictions_model_id_created_at", table_name="stored_predictions")
