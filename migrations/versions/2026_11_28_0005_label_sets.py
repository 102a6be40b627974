"""label sets: named labels over a project's images besides their label

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-28 20:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "label_sets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("multi_label", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_label_sets_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_label_sets")),
        sa.UniqueConstraint("project_id", "name", name=op.f("uq_label_sets_project_id")),
    )
    op.create_table(
        "image_labels",
        sa.Column("image_id", sa.String(length=40), nullable=False),
        sa.Column("label_set_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_image_labels_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["label_set_id"],
            ["label_sets.id"],
            name=op.f("fk_image_labels_label_set_id_label_sets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("image_id", "label_set_id", "label", name=op.f("pk_image_labels")),
    )


def downgrade() -> None:
    op.drop_table("image_labels")
    op.drop_table("label_sets")
