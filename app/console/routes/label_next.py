""" "Label these next": the production model's suggestions as a grid to confirm or correct
(a click, or a number key), stored predictions of low confidence or rejected with feedback
buttons, the dataset audit's findings with one-click fixes, and retraining. The same
services as ``/v1/.../suggestions``, ``/v1/predictions/...`` and ``/v1/.../audit``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse, Response

from app.api.deps import EnqueueDep, SessionDep, SettingsDep, StoreDep
from app.console.deps import ConsoleProject, ConsoleTenant
from app.console.templating import redirect_back, render
from app.db.models import Image, Job, Project
from app.errors import AuditJobFailed, ProjectHasNoModel, TooManyActiveJobs
from app.services import aliases, audit, jobs
from app.services import images as images_service
from app.services import predictions as predictions_service
from app.services import suggestions as suggestions_service

router = APIRouter()
#: Suggestions shown at once.
SUGGESTED = 12
#: Stored predictions shown at once.
PREDICTIONS_SHOWN = 24
#: Number keys 1-9 label with the first nine classes.
SHORTCUTS = 9
#: Finding kinds with a one-click fix: delete all but one image, or relabel.
DELETE_FIX = ("exact_duplicate", "near_duplicate", "leakage")
RELABEL_FIX = ("mislabel",)


def class_names(project: Project) -> list[str]:
    """The project's classes in the order their number keys follow."""
    return sorted(c.name for c in project.classes)


@router.get("/projects/{project_id}/next")
def label_next_page(
    request: Request,
    db: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    tenant: ConsoleTenant,
    project: ConsoleProject,
    below: Annotated[float, Query(ge=0, le=1)] = 0.6,
    rejected: Annotated[bool, Query()] = False,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    """Suggestions first; then stored predictions without feedback: ``rejected`` ("none of
    the above") ones, else those whose top score is below ``below``."""
    try:
        model, suggested, pool = suggestions_service.suggest(
            db=db, settings=settings, store=store, project=project, n=SUGGESTED
        )
    except ProjectHasNoModel as exc:
        model, suggested, pool, no_model = None, [], 0, exc.detail
    else:
        no_model = None
    predictions, next_cursor = predictions_service.list_(
        db=db, project=project, limit=PREDICTIONS_SHOWN, cursor=cursor, feedback=False,
        **({"rejected": True} if rejected else {"below": below}),
    )  # fmt: skip
    context = {
        "tenant": tenant,
        "project": project,
        "model": model,
        "suggestions": suggested,
        "pool_size": pool,
        "no_model": no_model,
        "predictions": predictions,
        "next_cursor": next_cursor,
        "filters": {"below": below, "rejected": rejected, "cursor": cursor},
        "classes": class_names(project),
        "shortcuts": SHORTCUTS,
        "retrain": _retrain_source(db, project) is not None,
    }
    return render(request, "label_next.html", context)


@router.post("/predictions/{prediction_id}/feedback")
def feedback(
    prediction_id: str,
    db: SessionDep,
    settings: SettingsDep,
    tenant: ConsoleTenant,
    label: Annotated[str, Form(min_length=1, max_length=100)],
    back: Annotated[str | None, Form()] = None,
) -> Response:
    """The prediction's image becomes a training image labeled ``label`` (``confirmed`` when
    it is the model's answer, else ``corrected``), as ``POST /v1/predictions/{id}/feedback``."""
    prediction = predictions_service.get(db=db, tenant_id=tenant.id, prediction_id=prediction_id)
    predictions_service.give_feedback(
        db=db, settings=settings, prediction=prediction, label=label, correct=None
    )
    return redirect_back(back, f"/console/projects/{prediction.project_id}/next")


@router.get("/predictions/{prediction_id}/thumbnail")
def prediction_thumbnail(
    prediction_id: str,
    db: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    tenant: ConsoleTenant,
) -> Response:
    prediction = predictions_service.get(db=db, tenant_id=tenant.id, prediction_id=prediction_id)
    data = images_service.thumbnail_of(
        store.get(images_service.blob_key(prediction.project_id, prediction.sha256)),
        settings=settings,
    )
    return Response(
        data,
        media_type="image/jpeg",
        headers={"ETag": f'"{prediction.sha256}-t"', "Cache-Control": "private, max-age=86400"},
    )


def _retrain_source(db: Session, project: Project) -> Job | None:
    """The job that trained the production model: retraining repeats it on today's images."""
    model = aliases.get(db=db, project=project, name=aliases.PRODUCTION)
    return db.get(Job, model.job_id) if model is not None else None


@router.post("/projects/{project_id}/retrain")
def retrain(
    db: SessionDep, settings: SettingsDep, enqueue: EnqueueDep, project: ConsoleProject
) -> Response:
    """A new job with the production model's method, backbone and params (promotion
    ``auto``), as ``POST /v1/projects/{project_id}/jobs``; then its page."""
    source = _retrain_source(db, project)
    if source is None:
        raise ProjectHasNoModel("The project has no production model to retrain; train one first.")
    job = jobs.create(
        db=db, settings=settings, project=project, method=source.method,
        backbone=source.backbone, params=source.params, enqueue=enqueue,
    )  # fmt: skip
    return RedirectResponse(f"/console/jobs/{job.id}", status_code=303)


@router.get("/projects/{project_id}/audit")
def audit_page(
    request: Request,
    db: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    enqueue: EnqueueDep,
    tenant: ConsoleTenant,
    project: ConsoleProject,
) -> Response:
    """The dataset audit (computed on cached features, cached until the images change; by
    a job for a large project, whose progress the page shows until it is done)."""
    context: dict[str, Any] = {"tenant": tenant, "project": project}
    try:
        report = audit.get_or_start(
            db=db, settings=settings, store=store, project=project, backbone=None,
            enqueue=enqueue,
        )  # fmt: skip
    except (AuditJobFailed, TooManyActiveJobs) as exc:
        return render(request, "audit.html", {**context, "error": exc.detail}, exc.status)
    if isinstance(report, Job):
        return render(request, "audit.html", {**context, "job": report}, 202)
    ids = {i for f in report["findings"] for i in f["image_ids"]}
    images = (
        {
            i.id: i
            for i in db.scalars(
                select(Image).where(Image.project_id == project.id, Image.id.in_(ids))
            )
        }
        if ids
        else {}
    )
    context |= {
        "report": report,
        "images": images,
        "delete_fix": DELETE_FIX,
        "relabel_fix": RELABEL_FIX,
    }
    return render(request, "audit.html", context)
