"""A project's models as versions: metrics beside their baselines, the negative-transfer
flag and promotion outcome; one model's confusion matrix (a heat map) and per-class
precision and recall; aliases (set, promote, roll back) and export. The same services as
``/v1/.../models`` and ``/v1/.../aliases``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from app.api.deps import SessionDep, SettingsDep, StoreDep
from app.console.deps import ConsoleActor, ConsoleProject, ConsoleTenant
from app.console.figures import confusion_cells
from app.console.templating import redirect_back, render
from app.db.models import Model, Project
from app.services import aliases
from app.services import models as service
from app.services import predict as predict_service
from app.services import predictions as predictions_service

router = APIRouter()
#: Alias moves listed on the models page (the newest).
HISTORY_SHOWN = 20


def versions(db: Session, project: Project) -> list[Model]:
    """Every model of the project, newest version first."""
    out: list[Model] = []
    cursor: str | None = None
    while True:
        page, cursor = service.list_(db=db, project=project, limit=500, cursor=cursor)
        out += page
        if cursor is None:
            return sorted(out, key=lambda m: m.version, reverse=True)


def _recent_moves(db: Session, project: Project, name: str) -> list[Any]:
    events, cursor = aliases.history(db=db, project=project, name=name, limit=500, cursor=None)
    while cursor is not None:
        more, cursor = aliases.history(db=db, project=project, name=name, limit=500, cursor=cursor)
        events += more
    return events[-HISTORY_SHOWN:][::-1]


@router.get("/projects/{project_id}/models")
def models_page(
    request: Request, db: SessionDep, tenant: ConsoleTenant, project: ConsoleProject
) -> Response:
    models = versions(db, project)
    context = {
        "tenant": tenant,
        "project": project,
        "models": models,
        "names": aliases.names_by_model(db=db, project_id=project.id),
        "aliases": aliases.list_(db=db, project=project),
        "feedback": predictions_service.feedback_counts(db=db, model_ids=[m.id for m in models]),
        "moves": _recent_moves(db, project, aliases.PRODUCTION),
    }
    return render(request, "versions.html", context)


def model_details(db: Session, project: Project, model: Model) -> dict[str, Any]:
    """What the model page shows beyond the model row: its aliases, the project's aliases,
    the confusion matrix's cells, feedback counts and the export formats."""
    matrix = (model.metrics or {}).get("confusion_matrix") or {}
    return {
        "model_aliases": aliases.names_by_model(db=db, project_id=project.id).get(model.id, []),
        "aliases": aliases.list_(db=db, project=project),
        "confusion": {
            "labels": list(matrix.get("labels") or []),
            "cells": confusion_cells(matrix.get("matrix") or []),
        },
        "feedback": predictions_service.feedback_counts(db=db, model_ids=[model.id])[model.id],
        "export_formats": list(predict_service.EXPORT_FORMATS),
    }


@router.post("/projects/{project_id}/aliases")
def set_alias(
    db: SessionDep,
    settings: SettingsDep,
    project: ConsoleProject,
    actor: ConsoleActor,
    name: Annotated[str, Form(max_length=64)],
    model_id: Annotated[str, Form(max_length=40)],
    back: Annotated[str | None, Form()] = None,
) -> Response:
    """Point alias ``name`` at the model (``production``: promote it), as ``PUT
    /v1/projects/{project_id}/aliases/{name}``."""
    model = aliases.point(
        db=db, project=project, name=name.strip(), model_id=model_id, actor=actor,
        reason="set in the console", settings=settings,
    )  # fmt: skip
    return redirect_back(back, f"/console/models/{model.id}")


@router.post("/projects/{project_id}/aliases/{name}/rollback")
def rollback_alias(
    name: str,
    db: SessionDep,
    project: ConsoleProject,
    actor: ConsoleActor,
    back: Annotated[str | None, Form()] = None,
) -> Response:
    """Back to the model the alias pointed to before, as ``POST .../aliases/{name}/rollback``."""
    aliases.rollback(db=db, project=project, name=name, actor=actor)
    return redirect_back(back, f"/console/projects/{project.id}/models")


@router.get("/models/{model_id}/export")
def export(
    model_id: str,
    db: SessionDep,
    tenant: ConsoleTenant,
    settings: SettingsDep,
    store: StoreDep,
    format: Annotated[predict_service.ExportFormat, Query()] = "onnx",
) -> Response:
    """The model as one file (``GET /v1/models/{model_id}/export``'s service)."""
    model = service.get(db=db, tenant_id=tenant.id, model_id=model_id)
    data, filename, media_type = predict_service.export_file(
        settings=settings, store=store, model=model, fmt=format
    )
    disposition = f'attachment; filename="{filename}"'
    return Response(data, media_type=media_type, headers={"Content-Disposition": disposition})
