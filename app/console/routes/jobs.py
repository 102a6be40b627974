"""Train: a form built from the methods' JSON schemas (as ``/v1/methods`` serves them),
start, and a job page that follows stage, progress, per-epoch history and ETA live."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from app.api.deps import EnqueueDep, SessionDep, SettingsDep
from app.api.schemas import JobOut
from app.console import schema_form
from app.console.deps import ConsoleProject, ConsoleTenant
from app.console.templating import render
from app.db.base import utcnow
from app.db.models import JOB_TERMINAL, Job, Tenant
from app.errors import DovecoteError, UnknownMethod
from app.services import backbones as learned_backbones
from app.services import jobs as service
from app.services import projects as projects_service
from app.transfer.backbones import DEFAULT_BACKBONE, list_backbones
from app.transfer.methods import get_method, list_methods

router = APIRouter()
PROMOTE = ("auto", "always", "never")


def _train_context(
    db: Any, tenant: Tenant, project: Any, method: str, **extra: Any
) -> dict[str, Any]:
    impl = get_method(method)
    backbones = [b.name for b in list_backbones()]
    backbones += [m.id for m in learned_backbones.list_for_tenant(db=db, tenant_id=tenant.id)]
    return {
        "tenant": tenant, "project": project, "methods": list_methods(), "method": impl,
        "fields": schema_form.fields_of(impl.Params.model_json_schema()),
        "backbones": backbones, "default_backbone": DEFAULT_BACKBONE, "promote_options": PROMOTE,
        "values": {}, **extra,
    }  # fmt: skip


@router.get("/projects/{project_id}/train")
def train_form(
    request: Request,
    db: SessionDep,
    tenant: ConsoleTenant,
    project: ConsoleProject,
    method: str = Query("linear_probe", max_length=40),
) -> Response:
    return render(request, "train.html", _train_context(db, tenant, project, method))


@router.post("/projects/{project_id}/jobs")
async def start_job(
    request: Request,
    db: SessionDep,
    settings: SettingsDep,
    tenant: ConsoleTenant,
    project: ConsoleProject,
    enqueue: EnqueueDep,
) -> Response:
    form = await request.form()
    values = {k: [v for v in form.getlist(k) if isinstance(v, str)] for k in form}
    method = (values.get("method") or ["linear_probe"])[-1]
    try:
        impl = get_method(method)
        fields = schema_form.fields_of(impl.Params.model_json_schema())
        backbone = (values.get("backbone") or [""])[-1] or None
        promote = (values.get("promote") or ["auto"])[-1]
        if promote not in PROMOTE:
            promote = "auto"
        job = service.create(
            db=db, settings=settings, project=project, method=method, backbone=backbone,
            params=schema_form.params_from_form(fields, values), enqueue=enqueue,
            promote=promote,
        )  # fmt: skip
    except DovecoteError as exc:
        db.rollback()
        if isinstance(exc, UnknownMethod):
            method = "linear_probe"
        context = _train_context(
            db, tenant, project, method, error=exc.detail,
            values={k: v[-1] for k, v in values.items() if v},
        )  # fmt: skip
        return render(request, "train.html", context, status_code=exc.status)
    return RedirectResponse(f"/console/jobs/{job.id}", status_code=303)


def eta_seconds(job: Job, now: datetime | None = None) -> float | None:
    """Seconds left: the last epoch's estimate when the method reports epochs, else
    elapsed * (1 - p) / p from the progress fraction p; None when not running."""
    if job.status != "running" or job.started_at is None:
        return None
    if job.history and job.history[-1].get("eta_seconds") is not None:
        return float(job.history[-1]["eta_seconds"])
    if job.progress <= 0:
        return None
    started = job.started_at
    if started.tzinfo is None:  # SQLite hands timestamps back naive (they are UTC)
        started = started.replace(tzinfo=UTC)
    elapsed = max(0.0, ((now or utcnow()) - started).total_seconds())
    return elapsed * (1 - job.progress) / job.progress


def job_state(job: Job) -> dict[str, Any]:
    """The job as ``GET /v1/jobs/{id}`` shows it, with ``eta_seconds`` and ``terminal``."""
    state = JobOut.model_validate(job).model_dump(mode="json")
    state.update(eta_seconds=eta_seconds(job), terminal=job.status in JOB_TERMINAL)
    return state


def history_columns(history: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for record in history:
        columns += [k for k in record if k not in columns]
    return columns


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, db: SessionDep, tenant: ConsoleTenant) -> Response:
    job = service.get(db=db, tenant_id=tenant.id, job_id=job_id)
    project = projects_service.get(db=db, tenant_id=tenant.id, project_id=job.project_id)
    context = {
        "tenant": tenant, "project": project, "job": job, "state": job_state(job),
        "columns": history_columns(job.history or []),
    }  # fmt: skip
    return render(request, "job.html", context)


@router.get("/jobs/{job_id}/status")
def job_status(job_id: str, db: SessionDep, tenant: ConsoleTenant) -> JSONResponse:
    """What the job page polls (its script), as JSON."""
    job = service.get(db=db, tenant_id=tenant.id, job_id=job_id)
    return JSONResponse(job_state(job), headers={"Cache-Control": "no-store"})


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, db: SessionDep, tenant: ConsoleTenant) -> Response:
    service.cancel(db=db, job=service.get(db=db, tenant_id=tenant.id, job_id=job_id))
    return RedirectResponse(f"/console/jobs/{job_id}", status_code=303)
