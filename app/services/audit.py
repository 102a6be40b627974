"""The dataset audit of a project (:mod:`app.transfer.audit`) on its cached features.

Computed in the request for projects of up to :data:`MAX_IMAGES` images, and cached in the
blob store under ``audits/<project>/<digest>.json``, the digest covering everything the
audit reads (each image's sha256, label, split and size, the backbone, the audit version):
a new, deleted, relabeled or moved image gives a new digest, so a stale result is never
served.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.models import Image, Project
from app.errors import AuditTooLarge, DovecoteError
from app.services import backbones, training_data
from app.services.images import blob_key
from app.storage import BlobNotFound, BlobStore
from app.transfer.audit import AuditParams, audit, pixel_stats_of_bytes
from app.transfer.backbones import DEFAULT_BACKBONE, resolve_weights
from app.transfer.methods.base import frozen_features

log = logging.getLogger(__name__)

#: Most images audited in one request.
MAX_IMAGES = 2000
#: Bump when the audit's method or output changes: cached results are then recomputed.
VERSION = 2


def _digest(rows: list[Image], backbone: str) -> str:
    h = hashlib.sha256(f"audit-v{VERSION}\0{backbone}\0".encode())
    for r in rows:
        h.update(f"{r.id}\0{r.sha256}\0{r.label}\0{r.split}\0{r.width}x{r.height}\n".encode())
    return h.hexdigest()


def run(
    *, db: Session, settings: Settings, store: BlobStore, project: Project, backbone: str | None
) -> dict[str, Any]:
    """The project's audit as a JSON-able dict (the ``AuditOut`` schema)."""
    backbone = backbone or DEFAULT_BACKBONE
    backbones.check_usable(db=db, tenant_id=project.tenant_id, name=backbone)
    # By content, not by (random) id: the probe's folds, hence the findings, are the same
    # for the same images in every project.
    rows = list(
        db.scalars(select(Image).where(Image.project_id == project.id).order_by(Image.sha256))
    )
    if len(rows) > MAX_IMAGES:
        raise AuditTooLarge(
            f"The project has {len(rows)} images; an audit reads at most {MAX_IMAGES}.",
            limit=MAX_IMAGES,
        )
    digest = _digest(rows, backbone)
    key = f"audits/{project.id}/{digest}.json"
    try:
        return json.loads(store.get(key))  # type: ignore[no-any-return]
    except BlobNotFound:
        pass
    resolve_weights(backbone, weights_dir=settings.weights_dir, allow_hub=settings.allow_hub)
    data = training_data.load(db=db, settings=settings, project=project, backbone=backbone)
    by_sha = {s.key: s for s in data.samples}
    samples = [by_sha[r.sha256] for r in rows]
    if samples:
        _, X = frozen_features(data, samples)
    else:
        import numpy as np

        X = np.zeros((0, 1))

    def stats(r: Image) -> tuple[float, float, float] | None:
        try:
            return pixel_stats_of_bytes(store.get(blob_key(project.id, r.sha256)))
        except Exception:  # an unreadable blob is not a finding of this audit
            return None

    report = audit(
        keys=[r.sha256 for r in rows],
        labels=[r.label for r in rows],
        splits=[r.split for r in rows],
        features=X,
        widths=[r.width for r in rows],
        heights=[r.height for r in rows],
        stats=[stats(r) for r in rows],
        params=AuditParams(),
    )
    out = {
        "project_id": project.id,
        "backbone": backbone,
        "image_count": len(rows),
        "digest": digest,
        "summary": report.counts,
        "leakage": {"test_images_with_train_near_duplicates": report.leaking_test_images},
        "truncated": report.truncated,
        "balance": asdict(report.balance),
        "findings": [
            {
                "kind": f.kind,
                "image_ids": [rows[i].id for i in f.indices],
                "explanation": f.explanation,
                "suggested_label": f.suggested_label,
                "score": f.score,
            }
            for f in report.findings
        ],
    }
    store.delete_prefix(f"audits/{project.id}/")  # the previous image set's result
    store.put(key, json.dumps(out).encode())
    return out


def record_in_metrics(
    *,
    db: Session,
    settings: Settings,
    store: BlobStore,
    project: Project,
    backbone: str,
    metrics: dict[str, Any],
) -> None:
    """What a training job records of the audit of the images it trained on, into its
    model's ``metrics`` (hence model.json): ``audit`` (``digest``, ``backbone``,
    ``summary``: findings per kind), and when test images have near-duplicates among the
    training images, ``leakage`` (``test_images_with_train_near_duplicates``) and a
    ``test_split_leakage`` warning. Never fails the job: an audit that cannot run is
    recorded as ``audit.skipped``."""
    try:
        report = run(db=db, settings=settings, store=store, project=project, backbone=backbone)
    except DovecoteError as exc:  # too large, backbone gone...
        metrics["audit"] = {"skipped": exc.detail}
        return
    except Exception:
        log.exception("the audit of project %s failed", project.id)
        metrics["audit"] = {"skipped": "The audit failed; the server log has the details."}
        return
    metrics["audit"] = {k: report[k] for k in ("digest", "backbone", "summary")}
    leaking = report["leakage"]["test_images_with_train_near_duplicates"]
    if leaking:
        metrics["leakage"] = report["leakage"]
        metrics.setdefault("warnings", []).append(
            {
                "code": "test_split_leakage",
                "detail": f"{leaking} test image(s) have a near-duplicate among the training "
                "images: the test metrics are inflated. GET /v1/projects/{id}/audit lists "
                "them (kind leakage); keep each group in one split and train again.",
            }
        )
