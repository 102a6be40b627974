"""The dataset audit of a project (:mod:`app.transfer.audit`) on its cached features.

Projects of up to ``DOVECOTE_AUDIT_INLINE_MAX_IMAGES`` images are audited in the request;
larger ones by an audit job (a row of ``jobs`` whose ``method`` is
:data:`app.services.jobs.AUDIT`, so claiming, heartbeat, cancel, the time limit, fair
scheduling and the active-job quota hold for it as for a batch prediction), run by the
worker (:func:`run_job`). Either way the result is cached in the blob store under
``audits/<project>/<digest>.json``, the digest covering everything the audit reads (each
image's id, sha256, label, split and size, the backbone, the audit version): a new,
deleted, relabeled or moved image gives a new digest, so a stale result is never served,
and :func:`get_or_start` answers from the cache whenever the images did not change.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.base import new_id
from app.db.models import Image, Job, Project
from app.db.session import session_scope
from app.errors import AuditJobFailed, DovecoteError, JobNotCancellable
from app.queue import TRAIN_QUEUE
from app.services import backbones, jobs, quotas, training_data
from app.services.images import blob_key
from app.storage import BlobNotFound, BlobStore, open_store
from app.transfer.audit import AuditParams, audit, pixel_stats_of_bytes
from app.transfer.backbones import DEFAULT_BACKBONE, resolve_weights
from app.transfer.data import Progress, TrainingData, no_progress, sub_progress
from app.transfer.methods.base import frozen_features

log = logging.getLogger(__name__)

#: Bump when the audit's method or output changes: cached results are then recomputed.
VERSION = 2
#: Audit jobs of a project looked at for one that covers the current images.
RECENT_JOBS = 20
#: Seconds a client is asked to wait before asking again for a running audit.
RETRY_AFTER = 2


@dataclass(frozen=True)
class _Row:
    """What the audit reads of one image."""

    id: str
    sha256: str
    label: str | None
    split: str
    width: int
    height: int


@dataclass(frozen=True)
class Inputs:
    """A project's images as the audit reads them, in sha256 order, with their digest."""

    project_id: str
    backbone: str
    rows: list[_Row]
    digest: str


def _cache_key(project_id: str, digest: str) -> str:
    return f"audits/{project_id}/{digest}.json"


def current_inputs(*, db: Session, project: Project, backbone: str) -> Inputs:
    """The project's images now (by content, not by random id: the probe's folds, hence
    the findings, are the same for the same images in every project) and their digest."""
    rows = [
        _Row(r.id, r.sha256, r.label, r.split, r.width, r.height)
        for r in db.scalars(
            select(Image).where(Image.project_id == project.id).order_by(Image.sha256)
        )
    ]
    h = hashlib.sha256(f"audit-v{VERSION}\0{backbone}\0".encode())
    for r in rows:
        h.update(f"{r.id}\0{r.sha256}\0{r.label}\0{r.split}\0{r.width}x{r.height}\n".encode())
    return Inputs(project.id, backbone, rows, h.hexdigest())


def cached(*, store: BlobStore, inputs: Inputs) -> dict[str, Any] | None:
    """The stored result for exactly these images, if any."""
    try:
        return json.loads(store.get(_cache_key(inputs.project_id, inputs.digest)))  # type: ignore[no-any-return]
    except BlobNotFound:
        return None


def compute(
    *,
    store: BlobStore,
    data: TrainingData,
    inputs: Inputs,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Audit ``inputs`` (features of ``data``'s backbone, from the feature cache or
    extracted and cached: the first 80 % of ``progress``; then each image's pixel
    statistics), store the result in place of the project's previous one and return it
    as a JSON-able dict (the ``AuditOut`` schema). Needs no database session."""
    rows = inputs.rows
    by_sha = {s.key: s for s in data.samples}
    if rows:
        _, X = frozen_features(data, [by_sha[r.sha256] for r in rows],
                               sub_progress(progress, 0.0, 0.8))  # fmt: skip
    else:
        X = np.zeros((0, 1))
    stats: list[tuple[float, float, float] | None] = []
    for i, r in enumerate(rows):
        if i % 200 == 0:
            progress(0.8 + 0.2 * i / len(rows), f"reading pixels {i}/{len(rows)}")
        try:
            stats.append(pixel_stats_of_bytes(store.get(blob_key(inputs.project_id, r.sha256))))
        except Exception:  # an unreadable blob is not a finding of this audit
            stats.append(None)
    progress(1.0, "auditing")
    report = audit(
        keys=[r.sha256 for r in rows],
        labels=[r.label for r in rows],
        splits=[r.split for r in rows],
        features=X,
        widths=[r.width for r in rows],
        heights=[r.height for r in rows],
        stats=stats,
        params=AuditParams(),
    )
    out = {
        "project_id": inputs.project_id,
        "backbone": inputs.backbone,
        "image_count": len(rows),
        "digest": inputs.digest,
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
    store.delete_prefix(f"audits/{inputs.project_id}/")  # the previous image set's result
    store.put(_cache_key(inputs.project_id, inputs.digest), json.dumps(out).encode())
    return out


def _checked_inputs(
    *, db: Session, settings: Settings, project: Project, backbone: str | None
) -> Inputs:
    backbone = backbone or DEFAULT_BACKBONE
    backbones.check_usable(db=db, tenant_id=project.tenant_id, name=backbone)
    resolve_weights(backbone, weights_dir=settings.weights_dir, allow_hub=settings.allow_hub)
    return current_inputs(db=db, project=project, backbone=backbone)


def _cached_or_inline(
    *, db: Session, settings: Settings, store: BlobStore, project: Project, current: Inputs
) -> dict[str, Any] | None:
    """The cached result for ``current``, else computed now when the project has at most
    ``settings.audit_inline_max_images`` images, else None (a job's work)."""
    if (result := cached(store=store, inputs=current)) is not None:
        return result
    if len(current.rows) > settings.audit_inline_max_images:
        return None
    data = training_data.load(db=db, settings=settings, project=project, backbone=current.backbone)
    return compute(store=store, data=data, inputs=current)


def get_or_start(
    *,
    db: Session,
    settings: Settings,
    store: BlobStore,
    project: Project,
    backbone: str | None,
    enqueue: jobs.Enqueue,
    retry: bool = False,
) -> dict[str, Any] | Job:
    """The audit of the project's images as they are now: the cached result, or, for a
    project of up to ``settings.audit_inline_max_images`` images, computed now; for a
    larger one the audit job of these images: the queued or running one, else a new one
    (within the tenant's active-job quota). A failed job of these images raises
    :class:`AuditJobFailed` unless ``retry``, which starts another."""
    current = _checked_inputs(db=db, settings=settings, project=project, backbone=backbone)
    result = _cached_or_inline(db=db, settings=settings, store=store, project=project,
                               current=current)  # fmt: skip
    if result is not None:
        return result
    # One GET at a time per project decides (PostgreSQL; SQLite has one writer anyway).
    db.execute(select(Project.id).where(Project.id == project.id).with_for_update())
    latest = _latest_job(db=db, inputs=current)
    if latest is not None and latest.status in ("queued", "running"):
        db.commit()
        return latest
    if latest is not None and latest.status == "failed" and not retry:
        db.commit()
        detail = (latest.error or {}).get("detail", "")
        raise AuditJobFailed(
            f"The audit job {latest.id} of these images failed: {detail} "
            "GET this again with ?retry=true to start it again.",
            job_id=latest.id,
            error=latest.error,
        )
    quotas.check_new_job(db=db, settings=settings, tenant_id=project.tenant_id)
    job = Job(
        id=new_id("aud"),
        project_id=project.id,
        method=jobs.AUDIT,
        backbone=current.backbone,
        params={"digest": current.digest, "images": len(current.rows)},
        promote="never",
        status="queued",
        queue=TRAIN_QUEUE,  # it trains nothing: CPU workers
        stage="queued",
    )
    return jobs.submit(db=db, job=job, enqueue=enqueue)


def _latest_job(*, db: Session, inputs: Inputs) -> Job | None:
    """The newest audit job started for exactly these images and backbone."""
    recent = db.scalars(
        select(Job)
        .where(Job.project_id == inputs.project_id, Job.method == jobs.AUDIT)
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(RECENT_JOBS)
    )
    return next(
        (
            j
            for j in recent
            if j.params.get("digest") == inputs.digest and j.backbone == inputs.backbone
        ),
        None,
    )


def cancel(*, db: Session, project: Project) -> Job:
    """Cancel the project's newest queued or running audit job (as a training job's
    cancel: a queued one ends at once, a running one at its next progress report)."""
    job = db.scalar(
        select(Job)
        .where(
            Job.project_id == project.id,
            Job.method == jobs.AUDIT,
            Job.status.in_(("queued", "running")),
        )
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(1)
    )
    if job is None:
        raise JobNotCancellable("The project has no queued or running audit job.")
    return jobs.cancel(db=db, job=job)


def run_job(*, settings: Settings, job_id: str, progress: Progress) -> None:
    """The worker's side of the claimed audit job ``job_id``: audit the project's images
    as they are now (their digest is recorded in the job's history: it differs from the
    one the job was created for when images changed since), and store the result."""
    store = open_store(settings.resolved_storage_url)
    with session_scope(settings.resolved_database_url) as db:
        job = db.get(Job, job_id)
        assert job is not None  # claimed by this run
        project = db.get(Project, job.project_id)
        assert project is not None  # jobs are deleted with their project
        current = current_inputs(db=db, project=project, backbone=job.backbone)
        data = training_data.load(db=db, settings=settings, project=project,
                                  backbone=job.backbone)  # fmt: skip
    progress(0.0, "extracting features", {"digest": current.digest,
                                          "images": len(current.rows)})  # fmt: skip
    compute(store=store, data=data, inputs=current, progress=progress)


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
    ``test_split_leakage`` warning. The cached audit of these images when there is one;
    else computed now for a project of up to ``audit_inline_max_images`` images; else
    (and when it cannot run) recorded as ``audit.skipped``. Never fails the job."""
    try:
        current = _checked_inputs(db=db, settings=settings, project=project, backbone=backbone)
        report = _cached_or_inline(db=db, settings=settings, store=store, project=project,
                                   current=current)  # fmt: skip
        if report is None:
            metrics["audit"] = {
                "skipped": f"The project has {len(current.rows)} images (over "
                f"DOVECOTE_AUDIT_INLINE_MAX_IMAGES, {settings.audit_inline_max_images}) and "
                "no audit of these images was computed: GET /v1/projects/{id}/audit starts "
                "one; models trained once it is done record it."
            }
            return
    except DovecoteError as exc:  # backbone gone...
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
