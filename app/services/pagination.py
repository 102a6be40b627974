"""Cursor pagination over time-sortable ids: the cursor is the last id of the page."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import Session

from app.errors import InvalidInput

T = TypeVar("T")
MAX_LIMIT = 500


def paginate(
    db: Session, stmt: Select[Any], id_column: Any, *, limit: int, cursor: str | None
) -> tuple[list[Any], str | None]:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}.", code_hint="limit")
    if cursor:
        stmt = stmt.where(id_column > cursor)
    rows = list(db.scalars(stmt.order_by(id_column).limit(limit + 1)))
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None
