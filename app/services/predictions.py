"""Stored predictions (a project's opt-in ``store_predictions``), their feedback, and the
retention sweep.

A stored prediction keeps the image under the same blob key as an upload of the same bytes
(:func:`app.services.images.blob_key`), so a predicted image that is also uploaded, or
turned into a training image by feedback, is stored once. A blob is deleted only when
neither an image nor a stored prediction of the project still names its sha256.
"""

from __future__ import annotations

import hashlib
import io
import logging
from datetime import datetime, timedelta

from PIL import Image as PILImage
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.base import utcnow
from app.db.models import Image, Model, Project, StoredPrediction
from app.errors import Conflict, InvalidInput
from app.services import projects, quotas
from app.services.images import blob_key
from app.services.pagination import paginate
from app.services.scoping import get_owned
from app.storage import BlobStore
from app.transfer.predictor import Prediction

log = logging.getLogger(__name__)


def _image_info(data: bytes) -> tuple[str, int, int]:
    """Format and size from the header (the predictor already decoded the image)."""
    with PILImage.open(io.BytesIO(data)) as img:
        return (img.format or "")[:8], int(img.size[0]), int(img.size[1])


def record(
    *,
    db: Session,
    settings: Settings,
    store: BlobStore,
    model: Model,
    files: list[tuple[str, bytes]],
    predicted: list[tuple[int, Prediction]],
) -> dict[int, str]:
    """Store the answered images of a predict when the model's project opted in and its
    tenant is within its stored-predictions quota; returns the stored prediction id by the
    file's index in the request (empty when not stored)."""
    project = db.get(Project, model.project_id)
    if project is None or not project.store_predictions or not predicted:
        return {}
    if not quotas.may_store_predictions(
        db=db, settings=settings, tenant_id=project.tenant_id, count=len(predicted)
    ):
        log.warning(
            "project %s: its tenant is at DOVECOTE_TENANT_MAX_STORED_PREDICTIONS (%d); "
            "predictions answered, not stored",
            project.id,
            settings.tenant_max_stored_predictions,
        )
        return {}
    written: list[str] = []
    rows: dict[int, StoredPrediction] = {}
    try:
        for i, pred in predicted:
            name, data = files[i]
            sha = hashlib.sha256(data).hexdigest()
            key = blob_key(project.id, sha)
            if not store.exists(key):
                store.put(key, data)
                written.append(key)
            fmt, width, height = _image_info(data)
            rows[i] = StoredPrediction(
                project_id=project.id,
                model_id=model.id,
                model_version=model.version,
                filename="".join(ch for ch in name if ch.isprintable())[:255] or "upload",
                sha256=sha,
                format=fmt,
                width=width,
                height=height,
                size_bytes=len(data),
                label=pred.label,
                top_label=pred.scores[0][0] if pred.scores else (pred.label or ""),
                score=float(pred.score),
                scores=[{"label": label, "score": float(s)} for label, s in pred.scores],
                rejected=pred.label is None,
            )
        db.add_all(rows.values())
        db.commit()
    except Exception:
        # Storing is a side effect of answering: a failure here never fails the predict.
        db.rollback()
        for key in written:
            if not _blob_in_use(db, project.id, key.rsplit("/", 1)[1]):
                store.delete(key)
        log.exception("could not store the predictions of project %s", project.id)
        return {}
    return {i: row.id for i, row in rows.items()}


def get(*, db: Session, tenant_id: str, prediction_id: str) -> StoredPrediction:
    return get_owned(
        db, StoredPrediction, prediction_id, tenant_id=tenant_id, resource="prediction"
    )


def list_(
    *,
    db: Session,
    project: Project,
    limit: int,
    cursor: str | None,
    label: str | None = None,
    below: float | None = None,
    rejected: bool | None = None,
    model_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    feedback: bool | None = None,
) -> tuple[list[StoredPrediction], str | None]:
    """Oldest first, like every list; ``below``: top score under it; ``since`` inclusive,
    ``until`` exclusive; ``feedback``: whether one was given."""
    stmt = select(StoredPrediction).where(StoredPrediction.project_id == project.id)
    if label is not None:
        stmt = stmt.where(StoredPrediction.label == label)
    if below is not None:
        stmt = stmt.where(StoredPrediction.score < below)
    if rejected is not None:
        stmt = stmt.where(StoredPrediction.rejected.is_(rejected))
    if model_id is not None:
        stmt = stmt.where(StoredPrediction.model_id == model_id)
    if since is not None:
        stmt = stmt.where(StoredPrediction.created_at >= since)
    if until is not None:
        stmt = stmt.where(StoredPrediction.created_at < until)
    if feedback is True:
        stmt = stmt.where(StoredPrediction.feedback.is_not(None))
    elif feedback is False:
        stmt = stmt.where(StoredPrediction.feedback.is_(None))
    return paginate(db, stmt, StoredPrediction.id, limit=limit, cursor=cursor)


def give_feedback(
    *,
    db: Session,
    settings: Settings,
    prediction: StoredPrediction,
    label: str | None,
    correct: bool | None,
) -> tuple[StoredPrediction, Image]:
    """The prediction's image becomes a labeled training image of the project: ``label``,
    or (``correct: true``) the label the model gave. The image row points at the blob the
    prediction stored (no second copy); an image of the project with the same sha256 is
    relabeled instead. ``confirmed`` when the label is the model's, else ``corrected``."""
    if (label is None) == (correct is None):
        raise InvalidInput('Send either {"label": "..."} or {"correct": true}.', field="label")
    if correct is not None:
        if not correct:
            raise InvalidInput(
                'correct: false says only that the model was wrong; send {"label": "..."} '
                "with the right label instead.",
                field="correct",
            )
        if prediction.label is None:
            raise InvalidInput(
                'The model answered "none of the above" for this image: there is no label to '
                'confirm; send {"label": "..."} with the right one.',
                field="correct",
            )
        label = prediction.label
    assert label is not None
    project = db.get(Project, prediction.project_id)
    assert project is not None
    clean = projects.clean_label(label)
    projects.refuse_similar(projects.class_names_by_key(project), clean)
    image = db.scalar(
        select(Image).where(Image.project_id == project.id, Image.sha256 == prediction.sha256)
    )
    try:
        if image is None:
            quotas.check_new_images(
                db=db, settings=settings, tenant_id=project.tenant_id, count=1,
                size_bytes=prediction.size_bytes,
            )  # fmt: skip
            image = Image(
                project_id=project.id,
                filename=prediction.filename,
                label=clean,
                format=prediction.format,
                width=prediction.width,
                height=prediction.height,
                size_bytes=prediction.size_bytes,
                sha256=prediction.sha256,
            )
            db.add(image)
        else:
            image.label = clean
        projects.ensure_classes(db=db, project=project, names={clean})
        db.flush()
        confirmed = not prediction.rejected and clean == prediction.label
        prediction.feedback = "confirmed" if confirmed else "corrected"
        prediction.feedback_label = clean
        prediction.image_id = image.id
        prediction.feedback_at = utcnow()
        db.commit()
    except IntegrityError:
        db.rollback()
        raise Conflict("Another request added the same image at the same time; retry.") from None
    return prediction, image


def feedback_counts(*, db: Session, model_ids: list[str]) -> dict[str, dict[str, int]]:
    """``{model_id: {"confirmed": n, "corrected": m}}`` over its stored predictions."""
    out = {m: {"confirmed": 0, "corrected": 0} for m in model_ids}
    if not model_ids:
        return out
    rows = db.execute(
        select(StoredPrediction.model_id, StoredPrediction.feedback, func.count())
        .where(StoredPrediction.model_id.in_(model_ids), StoredPrediction.feedback.is_not(None))
        .group_by(StoredPrediction.model_id, StoredPrediction.feedback)
    )
    for model_id, kind, n in rows:
        if kind in out[model_id]:
            out[model_id][kind] = int(n)
    return out


def _blob_in_use(db: Session, project_id: str, sha: str) -> bool:
    """Whether an image or a stored prediction of the project names this sha256."""
    for cls in (Image, StoredPrediction):
        found = db.scalar(
            select(cls.id).where(cls.project_id == project_id, cls.sha256 == sha).limit(1)
        )
        if found is not None:
            return True
    return False


def blob_in_use(*, db: Session, project_id: str, sha256: str) -> bool:
    return _blob_in_use(db, project_id, sha256)


def sweep_expired(
    *, db: Session, store: BlobStore, now: datetime | None = None, batch: int = 1000
) -> dict[str, int]:
    """Delete stored predictions older than their project's ``prediction_retention_days``
    (rows first, then blobs no image or remaining prediction names)."""
    now = now or utcnow()
    deleted = blobs = 0
    for project_id, days in db.execute(select(Project.id, Project.prediction_retention_days)):
        cutoff = now - timedelta(days=max(1, int(days or 1)))
        while True:
            expired = list(
                db.execute(
                    select(StoredPrediction.id, StoredPrediction.sha256)
                    .where(
                        StoredPrediction.project_id == project_id,
                        StoredPrediction.created_at < cutoff,
                    )
                    .limit(batch)
                )
            )
            if not expired:
                break
            db.execute(
                delete(StoredPrediction).where(StoredPrediction.id.in_([i for i, _ in expired]))
            )
            db.commit()
            deleted += len(expired)
            for sha in {s for _, s in expired}:
                if not _blob_in_use(db, project_id, sha):
                    store.delete(blob_key(project_id, sha))
                    blobs += 1
    return {"predictions_expired": deleted, "prediction_blobs_deleted": blobs}
