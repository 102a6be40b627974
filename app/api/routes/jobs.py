from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response, status

from app.api.deps import (
    CursorQuery,
    EnqueueDep,
    LimitQuery,
    ProjectDep,
    SessionDep,
    SettingsDep,
    TenantDep,
)
from app.api.schemas import JobCreate, JobOut, Page, job_create_examples
from app.services import jobs as service

router = APIRouter(tags=["jobs"])


@router.post("/v1/projects/{project_id}/jobs", status_code=status.HTTP_202_ACCEPTED)
def create_job(
    body: Annotated[JobCreate, Body(openapi_examples=job_create_examples())],
    project: ProjectDep,
    db: SessionDep,
    settings: SettingsDep,
    enqueue: EnqueueDep,
    response: Response,
) -> JobOut:
    job = service.create(
        db=db,
        settings=settings,
        project=project,
        method=body.method,
        backbone=body.backbone,
        params=body.params,
        enqueue=enqueue,
        promote=body.promote,
    )
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.model_validate(job)


@router.get("/v1/projects/{project_id}/jobs")
def list_jobs(
    project: ProjectDep, db: SessionDep, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> Page[JobOut]:
    items, next_cursor = service.list_(db=db, project=project, limit=limit, cursor=cursor)
    return Page(items=[JobOut.model_validate(j) for j in items], next_cursor=next_cursor)


@router.get("/v1/jobs/{job_id}")
def get_job(job_id: str, db: SessionDep, tenant: TenantDep) -> JobOut:
    return JobOut.model_validate(service.get(db=db, tenant_id=tenant.id, job_id=job_id))


@router.post("/v1/jobs/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED)
def cancel_job(job_id: str, db: SessionDep, tenant: TenantDep) -> JobOut:
    job = service.get(db=db, tenant_id=tenant.id, job_id=job_id)
    return JobOut.model_validate(service.cancel(db=db, job=job))
