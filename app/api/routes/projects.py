from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.deps import (
    CursorQuery,
    EnqueueDep,
    LimitQuery,
    ProjectDep,
    SessionDep,
    SettingsDep,
    StoreDep,
    TenantDep,
)
from app.api.schemas import (
    AuditJobOut,
    AuditOut,
    ClassOut,
    LabelSetOut,
    Page,
    ProjectCreate,
    ProjectOut,
    ProjectUpdate,
    job_state,
)
from app.db.models import Job, Model, Project
from app.services import audit, label_sets, quotas
from app.services import projects as service

router = APIRouter(prefix="/v1/projects", tags=["projects"])


def project_out(db: Session, project: Project) -> ProjectOut:
    counts = service.class_image_counts(db=db, project_id=project.id)
    return ProjectOut(
        id=project.id,
        name=project.name,
        description=project.description,
        classes=[
            ClassOut(
                name=c.name,
                description=c.description,
                attributes=c.attributes or {},
                negative=bool(c.negative),
                image_count=counts.get(c.name, 0),
            )
            for c in sorted(project.classes, key=lambda c: c.name)
        ],
        label_sets=label_sets_out(db, project),
        image_count=service.image_count(db=db, project_id=project.id),
        default_model_id=project.default_model_id,
        default_model_version=db.scalar(
            select(Model.version).where(Model.id == project.default_model_id)
        )
        if project.default_model_id
        else None,
        store_predictions=bool(project.store_predictions),
        prediction_retention_days=project.prediction_retention_days,
        created_at=project.created_at,
    )


def label_sets_out(db: Session, project: Project) -> list[LabelSetOut]:
    return [
        LabelSetOut(name=s.name, multi_label=s.multi_label, labels=labels, image_count=n)
        for s, labels, n in label_sets.summaries(db=db, project=project)
    ]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_project(
    body: ProjectCreate, db: SessionDep, tenant: TenantDep, settings: SettingsDep
) -> ProjectOut:
    quotas.check_new_project(db=db, settings=settings, tenant_id=tenant.id)
    project = service.create(
        db=db,
        tenant_id=tenant.id,
        name=body.name,
        description=body.description,
        classes=body.class_dicts(),
        store_predictions=body.store_predictions,
        prediction_retention_days=body.prediction_retention_days,
    )
    return project_out(db, project)


@router.get("")
def list_projects(
    db: SessionDep, tenant: TenantDep, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> Page[ProjectOut]:
    items, next_cursor = service.list_(db=db, tenant_id=tenant.id, limit=limit, cursor=cursor)
    return Page(items=[project_out(db, p) for p in items], next_cursor=next_cursor)


@router.get("/{project_id}")
def get_project(project: ProjectDep, db: SessionDep) -> ProjectOut:
    return project_out(db, project)


@router.patch("/{project_id}")
def update_project(body: ProjectUpdate, project: ProjectDep, db: SessionDep) -> ProjectOut:
    changes = body.model_dump(exclude_unset=True)
    if body.classes is not None:
        changes["classes"] = ProjectCreate(name="_", classes=body.classes).class_dicts()
    return project_out(db, service.update(db=db, project=project, changes=changes))


@router.delete("/{project_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_project(project: ProjectDep, db: SessionDep, store: StoreDep) -> Response:
    service.delete(db=db, store=store, project=project)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{project_id}/label-sets", tags=["label sets"])
def list_label_sets(project: ProjectDep, db: SessionDep) -> list[LabelSetOut]:
    return label_sets_out(db, project)


@router.delete(
    "/{project_id}/label-sets/{name}", tags=["label sets"], status_code=status.HTTP_204_NO_CONTENT
)
def delete_label_set(name: str, project: ProjectDep, db: SessionDep) -> Response:
    """The set and every image's value in it; the images stay. Models already trained keep
    their heads for it."""
    label_sets.delete(db=db, project=project, name=name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def audit_job_out(job: Job) -> AuditJobOut:
    return AuditJobOut(
        job_id=job.id,
        project_id=job.project_id,
        backbone=job.backbone,
        digest=job.params["digest"],
        image_count=job.params["images"],
        **job_state(job),
    )


@router.get(
    "/{project_id}/audit",
    tags=["audit"],
    response_model=AuditOut,
    responses={
        202: {"model": AuditJobOut, "description": "A large project: the audit job computing it."}
    },
)
def audit_project(
    project: ProjectDep,
    db: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    enqueue: EnqueueDep,
    backbone: Annotated[str | None, Query(max_length=200)] = None,
    retry: Annotated[
        bool, Query(description="Start the audit job again when the last one failed.")
    ] = False,
) -> AuditOut | JSONResponse:
    """Dataset audit: cross-label duplicates, near-duplicates and train/test leakage, likely
    mislabels (confident learning) with a suggested label, class balance, outliers and
    image quality, on the backbone's cached features, cached until the project's images
    change. A project of up to `DOVECOTE_AUDIT_INLINE_MAX_IMAGES` images is audited in the
    request; a larger one by a job on the worker: `202` with the job (`Location`,
    `Retry-After`) until its result is ready, then `200`. A failed job of these images is
    `409 audit_job_failed` (`?retry=true` starts another)."""
    result = audit.get_or_start(
        db=db, settings=settings, store=store, project=project, backbone=backbone,
        enqueue=enqueue, retry=retry,
    )  # fmt: skip
    if isinstance(result, Job):
        return JSONResponse(
            audit_job_out(result).model_dump(mode="json"),
            status_code=status.HTTP_202_ACCEPTED,
            headers={
                "Location": f"/v1/projects/{project.id}/audit",
                "Retry-After": str(audit.RETRY_AFTER),
            },
        )
    return AuditOut.model_validate(result)


@router.post("/{project_id}/audit/cancel", tags=["audit"], status_code=status.HTTP_202_ACCEPTED)
def cancel_audit(project: ProjectDep, db: SessionDep) -> AuditJobOut:
    """Cancel the project's queued or running audit job (`409 job_not_cancellable` when
    there is none)."""
    return audit_job_out(audit.cancel(db=db, project=project))
