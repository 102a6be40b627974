"""A model in production, window by window, from its stored predictions.

Per time window (UTC hours or days): how many predictions, the class mix, a histogram of
the top score, the "none of the above" rate, the accuracy on the feedback given, and the
drift score (:mod:`app.transfer.drift`) between the window's images and the model's
training images, both as features of the model's pretrained backbone read from the
feature cache (keyed by sha256, like training's): only images not cached yet take a
backbone pass, and are cached.

A window newly flagged sends the ``model.drift`` webhook event (:func:`alert`) once per
model and window (a ``drift_alerts`` row, inserted or ignored on its primary key in the
transaction that records the event: of two computations at once, one sends it), for
windows that ended less than :data:`ALERT_MAX_AGE` ago: a first look at months of history
does not send months of alerts. Besides ``GET /v1/models/{id}/monitoring``, each worker
computes the day windows of models with recent stored predictions every
``DOVECOTE_DRIFT_CHECK_SECONDS`` (:func:`check_recent`).

The model's training images (the drift reference) are the project's ``target``-domain
images outside the ``test`` split that existed when its job started: the images it could
learn from, not those added since (feedback on its own predictions among them). At most
``DriftParams.max_reference`` of them, by sha256 order (a fixed pseudo-random sample).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.base import utcnow
from app.db.models import DriftAlert, Image, Job, Model, Project, StoredPrediction
from app.errors import InvalidInput
from app.services import backbones, webhooks
from app.services.images import blob_key
from app.services.predict import get_predictor
from app.storage import BlobStore
from app.transfer.data import Sample
from app.transfer.drift import (
    SIGNATURE_KEY,
    DriftParams,
    Reference,
    pixel_signature_of_bytes,
)
from app.transfer.features import FeatureCache

log = logging.getLogger(__name__)

WINDOWS: dict[str, timedelta] = {"day": timedelta(days=1), "hour": timedelta(hours=1)}
#: Windows covered when ``since`` is not given: a week of days, a day of hours.
DEFAULT_WINDOWS = {"day": 7, "hour": 24}
#: Most windows one call may cover (drift needs features for each).
MAX_WINDOWS = 400
#: Windows that ended longer ago than this never alert (they are history, not news).
ALERT_MAX_AGE = timedelta(days=7)
#: The confidence histogram: top scores in [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0].
HISTOGRAM_BINS = 10


def _utc(value: datetime) -> datetime:
    """A time as aware UTC (SQLite gives back naive UTC times)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime) -> str:
    return _utc(value).isoformat().replace("+00:00", "Z")


def window_start(t: datetime, window: str) -> datetime:
    """The start of the UTC hour or day ``t`` falls in."""
    t = _utc(t)
    if window == "day":
        return t.replace(hour=0, minute=0, second=0, microsecond=0)
    return t.replace(minute=0, second=0, microsecond=0)


def drift_params(settings: Settings) -> DriftParams:
    return DriftParams(
        threshold=settings.drift_threshold,
        pixel_threshold=settings.drift_pixel_threshold,
        min_images=settings.drift_min_images,
    )


@dataclass
class _Window:
    start: datetime
    count: int = 0
    classes: Counter[str] = field(default_factory=Counter)
    rejected: int = 0
    histogram: list[int] = field(default_factory=lambda: [0] * HISTOGRAM_BINS)
    feedback: Counter[str] = field(default_factory=Counter)
    shas: set[str] = field(default_factory=set)


def _span(
    window: str, since: datetime | None, until: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    if window not in WINDOWS:
        raise InvalidInput(f"window must be one of {sorted(WINDOWS)}.", field="window")
    step = WINDOWS[window]
    try:
        end = _utc(until) if until is not None else now
        start = window_start(
            _utc(since) if since is not None else end - DEFAULT_WINDOWS[window] * step, window
        )
    except OverflowError:  # a time at the very edge of the calendar
        raise InvalidInput("since or until is out of range.", field="since") from None
    if start >= end:
        raise InvalidInput("since must be before until.", field="since")
    if (end - start) / step > MAX_WINDOWS:
        raise InvalidInput(
            f"At most {MAX_WINDOWS} windows of one {window} per call; move since closer to "
            "until, or use window=day.",
            field="since",
        )
    return start, end


def reference_keys(*, db: Session, model: Model, limit: int) -> list[str]:
    """The sha256 of the model's training images (module docstring), at most ``limit``."""
    cutoff = db.scalar(select(Job.started_at).where(Job.id == model.job_id)) or model.created_at
    return list(
        db.scalars(
            select(Image.sha256)
            .where(
                Image.project_id == model.project_id,
                Image.domain == "target",
                Image.split != "test",
                Image.created_at < cutoff,
            )
            .order_by(Image.sha256)
            .limit(limit)
        )
    )


def monitor(
    *,
    db: Session,
    settings: Settings,
    store: BlobStore,
    model: Model,
    window: str = "day",
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The model's monitoring as a JSON-able dict (the ``MonitoringOut`` schema); windows
    without predictions are left out. Newly flagged windows alert (:func:`alert`)."""
    now = _utc(now or utcnow())
    start, end = _span(window, since, until, now)
    params = drift_params(settings)
    rows = db.execute(
        select(
            StoredPrediction.created_at,
            StoredPrediction.label,
            StoredPrediction.score,
            StoredPrediction.rejected,
            StoredPrediction.feedback,
            StoredPrediction.sha256,
        ).where(
            StoredPrediction.model_id == model.id,
            StoredPrediction.created_at >= start,
            StoredPrediction.created_at < end,
        )
    )
    windows: dict[datetime, _Window] = {}
    for created_at, label, score, rejected, feedback, sha in rows:
        w_start = window_start(created_at, window)
        w = windows.setdefault(w_start, _Window(w_start))
        w.count += 1
        if rejected:
            w.rejected += 1
        elif label is not None:
            w.classes[label] += 1
        w.histogram[min(HISTOGRAM_BINS - 1, max(0, int(score * HISTOGRAM_BINS)))] += 1
        if feedback is not None:
            w.feedback[feedback] += 1
        w.shas.add(sha)
    ordered = [windows[k] for k in sorted(windows)]
    drift = _drift(db=db, settings=settings, store=store, model=model, windows=ordered,
                   params=params)  # fmt: skip
    project = db.get(Project, model.project_id)
    out_windows = []
    for w in ordered:
        confirmed, corrected = w.feedback["confirmed"], w.feedback["corrected"]
        score, pixels = drift.scores.get(w.start, (None, None))
        out_windows.append(
            {
                "start": w.start,
                "end": w.start + WINDOWS[window],
                "predictions": w.count,
                "classes": dict(sorted(w.classes.items())),
                "rejected": w.rejected,
                "rejection_rate": w.rejected / w.count,
                "confidence_histogram": w.histogram,
                "feedback": {
                    "confirmed": confirmed,
                    "corrected": corrected,
                    "accuracy": (
                        confirmed / (confirmed + corrected) if confirmed + corrected else None
                    ),
                },
                "images": len(w.shas),
                "drift_score": score,
                "drift_score_pixels": pixels,
                "drift": None
                if score is None or pixels is None
                else score >= params.threshold or pixels >= params.pixel_threshold,
            }
        )
    alert(db=db, model=model, window=window, windows=out_windows, now=now,
          threshold=params.threshold, pixel_threshold=params.pixel_threshold)  # fmt: skip
    return {
        "model_id": model.id,
        "project_id": model.project_id,
        "window": window,
        "since": start,
        "until": end,
        "store_predictions": bool(project is not None and project.store_predictions),
        "drift": any(w["drift"] for w in out_windows),
        "drift_measure": "mmd2",
        "drift_threshold": params.threshold,
        "drift_pixel_threshold": params.pixel_threshold,
        "drift_min_images": params.min_images,
        "drift_max_images": params.max_images,
        "drift_note": drift.note,
        "reference_images": drift.reference_images,
        "confidence_bins": [i / HISTOGRAM_BINS for i in range(HISTOGRAM_BINS + 1)],
        "windows": out_windows,
    }


@dataclass
class _Drift:
    #: per window start: (MMD² of backbone features, MMD² of pixel signatures)
    scores: dict[datetime, tuple[float, float]] = field(default_factory=dict)
    reference_images: int = 0
    note: str | None = None


def _drift(
    *,
    db: Session,
    settings: Settings,
    store: BlobStore,
    model: Model,
    windows: list[_Window],
    params: DriftParams,
) -> _Drift:
    """Drift score per window with at least ``params.min_images`` distinct images (at most
    ``params.max_images`` of them, by sha256 order), against the reference."""
    out = _Drift()
    scored = [w for w in windows if len(w.shas) >= params.min_images]
    if model.method == backbones.METHOD:
        out.note = "A learned backbone (pretrain) has no training images to compare with."
        return out
    ref_keys = reference_keys(db=db, model=model, limit=params.max_reference)
    out.reference_images = len(ref_keys)
    if len(ref_keys) < 2:
        out.note = "Fewer than 2 training images are left to compare with: no drift score."
        return out
    if not scored:
        return out
    samples = {w.start: sorted(w.shas)[: params.max_images] for w in scored}
    keys = ref_keys + [k for chunk in samples.values() for k in chunk]
    project_id, prefix = model.project_id, model.artifact_prefix
    X = get_predictor(settings).pretrained_features(
        model.id,
        lambda name: store.get(f"{prefix}/{name}"),
        [Sample(key=k) for k in dict.fromkeys(keys)],  # each image once
        lambda s: store.get(blob_key(project_id, s.key)),
        cache_dir=settings.feature_cache_dir,
    )
    row = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    P = _signatures(settings, store, project_id, list(row))
    ref_rows = [row[k] for k in ref_keys]
    features, pixels = Reference.of(X[ref_rows]), Reference.of(P[ref_rows])
    for start, chunk in samples.items():
        rows = np.array([row[k] for k in chunk])
        out.scores[start] = (features.score(X[rows]), pixels.score(P[rows]))
    return out


def _signatures(
    settings: Settings, store: BlobStore, project_id: str, keys: list[str]
) -> np.ndarray:
    """The pixel signatures (:func:`app.transfer.drift.pixel_signature`) of the project's
    images ``keys`` (sha256), cached beside the features: each image is decoded once."""
    cache = FeatureCache(settings.feature_cache_dir, SIGNATURE_KEY)
    rows = []
    for key in keys:
        vector = cache.get(key)
        if vector is None:
            vector = pixel_signature_of_bytes(store.get(blob_key(project_id, key)))
            cache.put(key, vector)
        rows.append(vector)
    return np.stack(rows)


def _insert_once(db: Session, **values: Any) -> bool:
    """Insert a ``drift_alerts`` row unless one with its key exists (``ON CONFLICT DO
    NOTHING``: a concurrent insert of the same key waits for the first to commit, then
    does nothing); whether this call inserted it."""
    dialect = db.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(DriftAlert).values(**values).on_conflict_do_nothing()
    # RETURNING, not rowcount: the row comes back only when this statement inserted it.
    return db.execute(stmt.returning(DriftAlert.model_id)).first() is not None


def alert(
    *,
    db: Session,
    model: Model,
    window: str,
    windows: list[dict[str, Any]],
    now: datetime,
    threshold: float,
    pixel_threshold: float,
) -> int:
    """Send ``model.drift`` for each flagged window (of :func:`monitor`'s answer) that
    ended less than :data:`ALERT_MAX_AGE` before ``now`` and has not alerted yet; returns
    how many were sent. The alert's row and the event's deliveries commit together."""
    sent = 0
    for w in windows:
        if not w["drift"] or w["end"] <= now - ALERT_MAX_AGE:
            continue
        if not _insert_once(db, model_id=model.id, window=window, window_start=w["start"],
                            drift_score=w["drift_score"], created_at=utcnow()):  # fmt: skip
            continue
        webhooks.emit(
            db,
            project_id=model.project_id,
            event="model.drift",
            payload={
                "model": {"id": model.id, "version": model.version},
                "window": {
                    "kind": window,
                    "start": _iso(w["start"]),
                    "end": _iso(w["end"]),
                },
                "drift_score": w["drift_score"],
                "drift_threshold": threshold,
                "drift_score_pixels": w["drift_score_pixels"],
                "drift_pixel_threshold": pixel_threshold,
                "predictions": w["predictions"],
                "images": w["images"],
                "rejection_rate": w["rejection_rate"],
            },
        )
        sent += 1
    db.commit()
    return sent


#: Day windows a scheduled check covers: the current one and the one before (whose last
#: predictions came after the previous check).
CHECKED_DAYS = 2


def check_recent(
    *, db: Session, settings: Settings, store: BlobStore, now: datetime | None = None
) -> dict[str, int]:
    """The worker's periodic drift check: :func:`monitor` (which alerts) over the last
    :data:`CHECKED_DAYS` day windows of every model with stored predictions in them. A
    model whose check fails is logged and skipped. Returns ``{"checked", "failed"}``
    (models)."""
    now = _utc(now or utcnow())
    since = window_start(now, "day") - (CHECKED_DAYS - 1) * WINDOWS["day"]
    model_ids = list(
        db.scalars(
            select(StoredPrediction.model_id).where(StoredPrediction.created_at >= since).distinct()
        )
    )
    db.commit()
    counts = {"checked": 0, "failed": 0}
    for model_id in model_ids:
        model = db.get(Model, model_id)
        if model is None:  # deleted since its predictions were stored
            continue
        try:
            monitor(db=db, settings=settings, store=store, model=model, window="day",
                    since=since, until=now, now=now)  # fmt: skip
            counts["checked"] += 1
        except Exception:
            db.rollback()
            log.exception("drift check of model %s failed", model_id)
            counts["failed"] += 1
    return counts
