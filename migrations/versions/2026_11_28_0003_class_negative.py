"""class negative flag

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 18:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("project_classes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("negative", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("project_classes", schema=None) as batch_op:
        batch_op.drop_column("negative")
