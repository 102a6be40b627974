"""Service-wide counts for ``/metrics``: never one series per tenant, project or model
(thousands of models would be thousands of series)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import Job, Model, Project, StoredPrediction


def jobs_by_status(*, db: Session) -> dict[str, int]:
    return {
        status: n for status, n in db.execute(select(Job.status, func.count()).group_by(Job.status))
    }


def totals(*, db: Session) -> dict[str, int]:
    return {
        name: db.scalar(select(func.count()).select_from(table)) or 0
        for name, table in (("projects", Project), ("models", Model))
    }


def stored_predictions(*, db: Session) -> dict[str, int]:
    """Stored predictions over every model: ``answered``, ``rejected`` ("none of the
    above"), and those with feedback ``confirmed`` / ``corrected``."""
    out = {"answered": 0, "rejected": 0, "confirmed": 0, "corrected": 0}
    rows = db.execute(
        select(StoredPrediction.rejected, StoredPrediction.feedback, func.count()).group_by(
            StoredPrediction.rejected, StoredPrediction.feedback
        )
    )
    for rejected, feedback, n in rows:
        out["rejected" if rejected else "answered"] += n
        if feedback in ("confirmed", "corrected"):
            out[feedback] += n
    return out
