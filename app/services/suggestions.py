""" "Label these next": the project's unlabeled pool ranked by :mod:`app.transfer.active`.

The pool is the images uploaded without a label plus the stored predictions without
feedback (whose image is not already labeled), one entry per sha256. The production
model scores it from cached features (:meth:`Predictor.pool_scores`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.models import Image, Model, Project, StoredPrediction
from app.errors import InvalidInput
from app.services import aliases
from app.services.images import blob_key
from app.services.models import artifact_reader
from app.services.predict import get_predictor
from app.storage import BlobStore
from app.transfer.active import margins, rank_scored
from app.transfer.data import Sample

MAX_N = 100
#: Newest pool entries considered (each kind); the rest wait for the next call.
MAX_POOL = 2000
#: Labeled images whose cached features seed the diversity term.
MAX_LABELED = 5000


@dataclass(frozen=True)
class PoolEntry:
    """One image of the unlabeled pool: an upload without a label, or a stored prediction."""

    source: str  # image | prediction
    id: str
    filename: str


def unlabeled_pool(
    *, db: Session, project: Project, limit: int
) -> tuple[dict[str, PoolEntry], set[str]]:
    """The project's unlabeled pool by sha256 (the newest ``limit`` of each kind, uploads
    first, one entry per sha256), and the sha256 of its labeled images."""
    labeled = set(
        db.scalars(
            select(Image.sha256).where(Image.project_id == project.id, Image.label.is_not(None))
        )
    )
    entries: dict[str, PoolEntry] = {}
    for img in db.execute(
        select(Image.id, Image.sha256, Image.filename)
        .where(Image.project_id == project.id, Image.label.is_(None))
        .order_by(Image.id.desc())
        .limit(limit)
    ):
        entries.setdefault(img.sha256, PoolEntry("image", img.id, img.filename))
    for pred in db.execute(
        select(StoredPrediction.id, StoredPrediction.sha256, StoredPrediction.filename)
        .where(StoredPrediction.project_id == project.id, StoredPrediction.feedback.is_(None))
        .order_by(StoredPrediction.id.desc())
        .limit(limit)
    ):
        if pred.sha256 not in labeled:
            entries.setdefault(pred.sha256, PoolEntry("prediction", pred.id, pred.filename))
    return entries, labeled


@dataclass(frozen=True)
class Suggestion:
    source: str  # image | prediction
    image_id: str | None
    prediction_id: str | None
    sha256: str
    filename: str
    suggested_label: str
    score: float
    margin: float
    rejected: bool
    priority: float


def suggest(
    *, db: Session, settings: Settings, store: BlobStore, project: Project, n: int
) -> tuple[Model, list[Suggestion], int]:
    """The ``n`` pool entries most worth labeling, with the production model's guess;
    returns the model, the suggestions and the pool size."""
    if not 1 <= n <= MAX_N:
        raise InvalidInput(f"n must be between 1 and {MAX_N}.", field="n")
    model = aliases.resolve_for_predict(db=db, project=project, name=aliases.PRODUCTION)
    entries, labeled = unlabeled_pool(db=db, project=project, limit=MAX_POOL)
    if not entries:
        return model, [], 0
    shas = list(entries)
    project_id, prefix = project.id, model.artifact_prefix
    feats, probs, labeled_feats = get_predictor(settings).pool_scores(
        model.id,
        artifact_reader(store, prefix),
        [Sample(key=sha) for sha in shas],
        lambda s: store.get(blob_key(project_id, s.key)),
        cache_dir=settings.feature_cache_dir,
        labeled_keys=sorted(labeled)[:MAX_LABELED],
    )
    threshold = model.metrics.get("reject_below")
    tau = float(threshold) if isinstance(threshold, int | float) else None
    order = rank_scored(probs, feats, n, reject_below=tau, labeled=labeled_feats)
    margin = margins(probs)
    out = []
    for i, priority in order:
        entry = entries[shas[i]]
        best = int(probs[i].argmax())
        score = float(probs[i, best])
        out.append(
            Suggestion(
                source=entry.source,
                image_id=entry.id if entry.source == "image" else None,
                prediction_id=entry.id if entry.source == "prediction" else None,
                sha256=shas[i],
                filename=entry.filename,
                suggested_label=model.classes[best],
                score=score,
                margin=float(margin[i]),
                rejected=tau is not None and score < tau,
                priority=priority,
            )
        )
    return model, out, len(shas)
