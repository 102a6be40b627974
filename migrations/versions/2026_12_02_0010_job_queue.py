"""jobs.queue: the queue a job's messages go to (`train`, or `gpu` for backbone training)

Revision ID: 0010_job_queue
Revises: 0009_webhooks
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_job_queue"
down_revision: str | None = "0009_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every job created before had its messages sent to `train`.
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("queue", sa.String(length=16), server_default="train", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("queue")
