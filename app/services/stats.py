"""Service-wide counts for ``/metrics``."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import Job, Model, Project


def jobs_by_status(*, db: Session) -> dict[str, int]:
    return {
        status: n for status, n in db.execute(select(Job.status, func.count()).group_by(Job.status))
    }


def totals(*, db: Session) -> dict[str, int]:
    return {
        name: db.scalar(select(func.count()).select_from(table)) or 0
        for name, table in (("projects", Project), ("models", Model))
    }
