"""Service-wide counts for ``/metrics``: never one series per tenant, project or model
(thousands of models would be thousands of series).

The stored predictions can be millions of rows: their counts are computed at most once per
``DOVECOTE_METRICS_CACHE_SECONDS`` per process and database (:func:`stored_predictions`),
so a scrape every few seconds does not scan the table every few seconds.
"""

from __future__ import annotations

import threading
import time

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


_counted: dict[str, tuple[float, dict[str, int]]] = {}
_counting = threading.Lock()


def stored_predictions(*, db: Session, max_age: float) -> dict[str, int]:
    """Stored predictions over every model: ``answered``, ``rejected`` ("none of the
    above"), and those with feedback ``confirmed`` / ``corrected``; the counts of this
    database computed less than ``max_age`` seconds ago when there are (one scan at a time
    per process: concurrent scrapes wait for it and share it)."""
    url = db.get_bind().url.render_as_string(hide_password=True)
    with _counting:
        at, counts = _counted.get(url, (float("-inf"), {}))
        if time.monotonic() - at >= max_age:
            counts = _count_stored_predictions(db)
            _counted[url] = (time.monotonic(), counts)
        return dict(counts)


def _count_stored_predictions(db: Session) -> dict[str, int]:
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
