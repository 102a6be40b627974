"""webhooks.secret: room for a sealed secret (``fernet:`` + a Fernet token)

Secrets are now stored sealed (:mod:`app.sealing`); a webhook secret's token is about 170
characters, past the column's 100. Rows stored before stay readable as they are;
``dovecote secrets reseal`` seals them.

Revision ID: 0013_webhook_secret_sealed
Revises: 0012_stored_predictions_time
Create Date: 2026-12-03 08:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_webhook_secret_sealed"
down_revision: str | None = "0012_stored_predictions_time"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.alter_column(
            "secret", existing_type=sa.String(100), type_=sa.String(400), existing_nullable=False
        )


def downgrade() -> None:
    # A sealed secret (~170 characters) does not fit back: PostgreSQL refuses this while a
    # webhook holds one (the older code could not read it either: delete those webhooks).
    with op.batch_alter_table("webhooks") as batch:
        batch.alter_column(
            "secret", existing_type=sa.String(400), type_=sa.String(100), existing_nullable=False
        )
