"""Per-tenant quotas: what a tenant uses, its limits, and the checks that refuse more.

Every limit is a setting (``DOVECOTE_TENANT_MAX_*``, ``DOVECOTE_MAX_*_PER_PROJECT``,
``DOVECOTE_MAX_TENANT_WEBHOOKS``; 0 means no limit). Active jobs are a ``429`` with
``Retry-After`` (they end, so waiting helps); projects, images, stored bytes, models, aliases
and webhooks are a ``403`` (deleting something helps, waiting does not). The checks read
the database at request time: two requests racing past a limit may both pass it by one
request's worth, never more.

Stored predictions are the exception: storing never fails a predict, so past
``DOVECOTE_TENANT_MAX_STORED_PREDICTIONS`` a predict is answered and not stored
(:func:`may_store_predictions`). That check runs on every predict of a storing project, so
it reads a per-process count (recounted every :data:`RECOUNT_SECONDS`) instead of scanning
the tenant's predictions each time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.models import Image, Job, Model, ModelAlias, Project, StoredPrediction, Webhook
from app.errors import (
    AliasQuotaExceeded,
    ImageQuotaExceeded,
    ModelQuotaExceeded,
    ProjectQuotaExceeded,
    StorageQuotaExceeded,
    TooManyActiveJobs,
    WebhookQuotaExceeded,
)
from app.transfer.methods import list_methods

ACTIVE = ("queued", "running")
#: Seconds a client told "too many active jobs" should wait before asking again.
ACTIVE_JOBS_RETRY_AFTER = 30
#: Seconds a process trusts its count of a tenant's stored predictions.
RECOUNT_SECONDS = 30.0


@dataclass(frozen=True)
class Usage:
    active_jobs: int
    projects: int
    images: int
    stored_bytes: int
    stored_predictions: int
    models: int


def usage(*, db: Session, tenant_id: str) -> Usage:
    images, stored = db.execute(
        select(func.count(Image.id), func.coalesce(func.sum(Image.size_bytes), 0))
        .join(Project, Image.project_id == Project.id)
        .where(Project.tenant_id == tenant_id)
    ).one()
    return Usage(
        active_jobs=_active_jobs(db, tenant_id),
        projects=db.scalar(
            select(func.count(Project.id)).where(Project.tenant_id == tenant_id)
        ) or 0,
        images=int(images),
        stored_bytes=int(stored),
        stored_predictions=_stored_predictions(db, tenant_id),
        models=_models(db, tenant_id),
    )  # fmt: skip


def limits(settings: Settings) -> dict[str, int]:
    """The limits by the names :class:`Usage` uses (0: none)."""
    return {
        "active_jobs": settings.tenant_max_active_jobs,
        "projects": settings.tenant_max_projects,
        "images": settings.tenant_max_images,
        "stored_bytes": settings.tenant_max_stored_bytes,
        "stored_predictions": settings.tenant_max_stored_predictions,
        "models": settings.tenant_max_models,
    }


def _active_jobs(db: Session, tenant_id: str) -> int:
    return db.scalar(
        select(func.count(Job.id))
        .join(Project, Job.project_id == Project.id)
        .where(Project.tenant_id == tenant_id, Job.status.in_(ACTIVE))
    ) or 0  # fmt: skip


def _models(db: Session, tenant_id: str) -> int:
    """Kept models plus the ones queued or running training jobs will make."""
    kept = db.scalar(
        select(func.count(Model.id))
        .join(Project, Model.project_id == Project.id)
        .where(Project.tenant_id == tenant_id)
    ) or 0  # fmt: skip
    training = db.scalar(
        select(func.count(Job.id))
        .join(Project, Job.project_id == Project.id)
        .where(
            Project.tenant_id == tenant_id,
            Job.status.in_(ACTIVE),
            Job.method.in_([m.name for m in list_methods()]),
        )
    ) or 0  # fmt: skip
    return kept + training


def _stored_predictions(db: Session, tenant_id: str) -> int:
    return db.scalar(
        select(func.count(StoredPrediction.id))
        .join(Project, StoredPrediction.project_id == Project.id)
        .where(Project.tenant_id == tenant_id)
    ) or 0  # fmt: skip


_stored: dict[tuple[str, str], tuple[float, int]] = {}
_storing = threading.Lock()


def may_store_predictions(*, db: Session, settings: Settings, tenant_id: str, count: int) -> bool:
    """Whether ``count`` more stored predictions keep the tenant within
    ``DOVECOTE_TENANT_MAX_STORED_PREDICTIONS``; when they do, they are counted.

    The count is the database's, recounted at most every :data:`RECOUNT_SECONDS` per
    process, plus what this process let store since: API processes together pass the
    limit by at most what the others store in that time."""
    limit = settings.tenant_max_stored_predictions
    if not limit:
        return True
    key = (db.get_bind().url.render_as_string(hide_password=True), tenant_id)
    with _storing:
        at, n = _stored.get(key, (float("-inf"), 0))
        if time.monotonic() - at >= RECOUNT_SECONDS:
            at, n = time.monotonic(), _stored_predictions(db, tenant_id)
        allowed = n + count <= limit
        _stored[key] = (at, n + count if allowed else n)
        return allowed


def check_new_job(*, db: Session, settings: Settings, tenant_id: str) -> None:
    limit = settings.tenant_max_active_jobs
    if limit and (active := _active_jobs(db, tenant_id)) >= limit:
        raise TooManyActiveJobs(
            f"The tenant has {active} queued or running jobs; the limit is {limit} "
            "(DOVECOTE_TENANT_MAX_ACTIVE_JOBS). Retry when one has finished.",
            limit="active_jobs",
            max=limit,
            retry_after=ACTIVE_JOBS_RETRY_AFTER,
        )


def check_new_training_job(*, db: Session, settings: Settings, tenant_id: str) -> None:
    """A job that will make a model: the active-job quota, then the model quota."""
    check_new_job(db=db, settings=settings, tenant_id=tenant_id)
    limit = settings.tenant_max_models
    if limit and (n := _models(db, tenant_id)) >= limit:
        raise ModelQuotaExceeded(
            f"The tenant keeps {n} models (with those its queued and running training jobs "
            f"will make); the limit is {limit} (DOVECOTE_TENANT_MAX_MODELS). Delete models "
            "first (DELETE /v1/models/{model_id}).",
            limit="models",
            max=limit,
        )


def check_new_alias(*, db: Session, settings: Settings, project_id: str) -> None:
    """Refuse one more alias (besides ``production``) of the project past its limit."""
    limit = settings.max_aliases_per_project
    stmt = select(func.count()).select_from(ModelAlias).where(ModelAlias.project_id == project_id)
    if limit and (n := db.scalar(stmt) or 0) >= limit:
        raise AliasQuotaExceeded(
            f"Project {project_id} has {n} aliases besides production; the limit is {limit} "
            "(DOVECOTE_MAX_ALIASES_PER_PROJECT). Delete an alias first, or point an existing "
            "one at the model.",
            limit="aliases_per_project",
            max=limit,
        )


def check_new_project(*, db: Session, settings: Settings, tenant_id: str) -> None:
    limit = settings.tenant_max_projects
    if limit and (n := usage(db=db, tenant_id=tenant_id).projects) >= limit:
        raise ProjectQuotaExceeded(
            f"The tenant has {n} projects; the limit is {limit} (DOVECOTE_TENANT_MAX_PROJECTS). "
            "Delete a project first.",
            limit="projects",
            max=limit,
        )


def check_new_images(
    *, db: Session, settings: Settings, tenant_id: str, count: int, size_bytes: int
) -> None:
    """Refuse adding ``count`` images of ``size_bytes`` bytes in all past either limit."""
    if not count:
        return
    now = usage(db=db, tenant_id=tenant_id)
    limit = settings.tenant_max_images
    if limit and now.images + count > limit:
        raise ImageQuotaExceeded(
            f"The tenant stores {now.images} images; {count} more would pass the limit of "
            f"{limit} (DOVECOTE_TENANT_MAX_IMAGES). Delete images or projects first.",
            limit="images",
            max=limit,
        )
    limit = settings.tenant_max_stored_bytes
    if limit and now.stored_bytes + size_bytes > limit:
        raise StorageQuotaExceeded(
            f"The tenant stores {now.stored_bytes} bytes of images; {size_bytes} more would "
            f"pass the limit of {limit} (DOVECOTE_TENANT_MAX_STORED_BYTES). Delete images or "
            "projects first.",
            limit="stored_bytes",
            max=limit,
        )


def check_new_webhook(
    *, db: Session, settings: Settings, tenant_id: str, project_id: str | None
) -> None:
    """Refuse one more webhook of ``project_id`` (None: a tenant-wide one) past its limit."""
    stmt = select(func.count(Webhook.id)).where(Webhook.tenant_id == tenant_id)
    if project_id is None:
        limit, name, what = settings.max_tenant_webhooks, "tenant_webhooks", "tenant-wide"
        stmt = stmt.where(Webhook.project_id.is_(None))
    else:
        limit, name, what = settings.max_webhooks_per_project, "webhooks_per_project", "project"
        stmt = stmt.where(Webhook.project_id == project_id)
    if limit and (n := db.scalar(stmt) or 0) >= limit:
        raise WebhookQuotaExceeded(
            f"There are {n} {what} webhooks; the limit is {limit} "
            f"(DOVECOTE_MAX_{name.upper()}). Delete a webhook first.",
            limit=name,
            max=limit,
        )
