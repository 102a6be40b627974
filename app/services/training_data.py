"""A project as a method sees it: :class:`~app.transfer.data.TrainingData`.

Built in one place for both callers: job creation (which only checks the data, reading no
bytes) and the worker (which trains on it).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.models import Image, Project
from app.errors import ImageMissing
from app.services import label_sets, models
from app.services.images import blob_key
from app.storage import BlobNotFound, open_store
from app.transfer.data import ClassInfo, Sample, TrainingData


def load(*, db: Session, settings: Settings, project: Project, backbone: str) -> TrainingData:
    """The project's samples and declared classes; bytes are read lazily from the store."""
    samples = [
        Sample(
            key=img.sha256,
            label=img.label,
            domain=img.domain,
            split=img.split,
            labels={
                name: tuple(v) if isinstance(v, list) else (v,) for name, v in img.labels.items()
            },
        )
        for img in db.scalars(
            select(Image).where(Image.project_id == project.id).order_by(Image.id)
        )
    ]
    classes = [
        ClassInfo(
            name=c.name,
            description=c.description or "",
            attributes=dict(c.attributes or {}),
            negative=bool(c.negative),
        )
        for c in project.classes
    ]
    store = open_store(settings.resolved_storage_url)
    project_id = project.id

    def load_bytes(sample: Sample) -> bytes:
        try:
            return store.get(blob_key(project_id, sample.key))
        except BlobNotFound:
            raise ImageMissing(
                f"Image {sample.key} of project {project_id} is no longer stored: it was "
                "deleted while it was being read. Start the job again.",
                sha256=sample.key,
            ) from None

    return TrainingData(
        samples=samples,
        load_bytes=load_bytes,
        classes=classes,
        backbone=backbone,
        feature_cache_dir=settings.feature_cache_dir,
        shared_cache_dir=settings.shared_cache_dir,
        weights_dir=settings.weights_dir,
        allow_hub=settings.allow_hub,
        batch_size=settings.feature_batch_size,
        max_pixels=settings.max_image_pixels,
        label_sets={
            name: row.multi_label
            for name, row in label_sets.project_sets(db=db, project=project).items()
        },
        load_model=lambda model_id: models.load_trained(
            settings=settings, project_id=project_id, model_id=model_id
        ),
    )
