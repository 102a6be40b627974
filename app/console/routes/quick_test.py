"""Quick test: drop a photo, see the label, the scores, "none of the above", and where in
the photo the model looks (the class activation map laid over it, with its box). The
same services as ``POST /v1/projects/{project_id}/predict?heatmap=true``."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from sqlalchemy.orm import Session
from starlette.responses import Response

from app.api.deps import SessionDep, SettingsDep, StoreDep
from app.api.guards import predict_slot
from app.config import Settings
from app.console.deps import ConsoleProject, ConsoleTenant
from app.console.figures import heatmap_overlay
from app.console.templating import render
from app.db.models import Model, Project, Tenant
from app.errors import DovecoteError, LocalizationUnsupported
from app.services import aliases
from app.services import images as images_service
from app.services import predict as predict_service
from app.services import predictions as predictions_service
from app.storage import BlobStore
from app.transfer.localize import Box

router = APIRouter()
TOP_K = 5
#: Longest side of the photo as the page shows it (decoded as the model decodes it).
PREVIEW_SIZE = 640


@dataclass(frozen=True)
class Answer:
    """What the page shows of one prediction."""

    filename: str
    photo_url: str
    label: str | None  # None: "none of the above"
    score: float
    scores: list[tuple[str, float]]
    negative: bool
    threshold: float | None
    box: Box | None
    heatmap_url: str | None
    localize_note: str | None
    prediction_id: str | None


def _data_url(data: bytes, media_type: str) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def _threshold(model: Model) -> float | None:
    """The model's own "none of the above" threshold (chosen on validation data), if any."""
    value = (model.metrics or {}).get("reject_below")
    return float(value) if isinstance(value, int | float) else None


def _context(db: Session, tenant: Tenant, project: Project, **extra: Any) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "project": project,
        "aliases": [(name, m) for name, m in aliases.list_(db=db, project=project) if m],
        **extra,
    }


@router.get("/projects/{project_id}/test")
def quick_test_page(
    request: Request, db: SessionDep, tenant: ConsoleTenant, project: ConsoleProject
) -> Response:
    return render(request, "quick_test.html", _context(db, tenant, project))


def _answer(
    *,
    db: Session,
    settings: Settings,
    store: BlobStore,
    model: Model,
    name: str,
    data: bytes,
    reject: bool,
) -> Answer:
    """Predict ``data`` (stored when the project keeps its predictions) and localize the
    answer, as ``/predict?heatmap=true`` does."""
    threshold = _threshold(model) if reject else None
    result = predict_service.predict(
        settings=settings, store=store, model=model, files=[(name, data)], top_k=TOP_K,
        reject_below=threshold, negative=predict_service.negative_classes(db=db, model=model),
    )  # fmt: skip
    stored = predictions_service.record(
        db=db,
        settings=settings,
        store=store,
        model=model,
        files=[(name, data)],
        predicted=result.predicted,
    )
    _, pred = result.predicted[0]
    box = heatmap = note = None
    if pred.label is None:
        note = 'No map for "none of the above": there is no class to look for.'
    elif pred.negative:
        note = f"No map: {pred.label} is a negative class (none of the things looked for)."
    else:
        try:
            (found,) = predict_service.localize(
                settings=settings, store=store, model=model, images=[data], labels=[pred.label]
            )
        except LocalizationUnsupported as exc:
            note = exc.detail
        else:
            if found is not None:
                box = found.box
                heatmap = _data_url(heatmap_overlay(found.heatmap_png()), "image/png")
    return Answer(
        filename=name,
        photo_url=_data_url(
            images_service.thumbnail_of(data, settings=settings, size=PREVIEW_SIZE), "image/jpeg"
        ),
        label=pred.label,
        score=pred.score,
        scores=pred.scores,
        negative=pred.negative,
        threshold=threshold,
        box=box,
        heatmap_url=heatmap,
        localize_note=note,
        prediction_id=stored.get(0),
    )


@router.post("/projects/{project_id}/test")
def quick_test(
    request: Request,
    db: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    tenant: ConsoleTenant,
    project: ConsoleProject,
    photo: Annotated[UploadFile, File()],
    alias: Annotated[str, Form(max_length=64)] = aliases.PRODUCTION,
    reject: Annotated[bool, Form()] = False,
) -> Response:
    """Predict one photo with the alias's model, as the project's predict does (stored when
    the project keeps its predictions, holding one of the tenant's predict slots); a
    refused photo is shown on the page with its reason."""
    data, name = photo.file.read(), photo.filename or "photo"
    slots = request.app.state.predict_slots
    try:
        with predict_slot(slots, tenant.id, max_files=settings.predict_max_files):
            model = aliases.resolve_for_predict(db=db, project=project, name=alias)
            answer = _answer(
                db=db, settings=settings, store=store, model=model, name=name, data=data,
                reject=reject,
            )  # fmt: skip
    except DovecoteError as exc:
        db.rollback()
        context = _context(db, tenant, project, error=exc.detail, alias=alias, reject=reject)
        return render(request, "quick_test.html", context, status_code=exc.status)
    context = _context(db, tenant, project, answer=answer, model=model, alias=alias, reject=reject)
    return render(request, "quick_test.html", context)
