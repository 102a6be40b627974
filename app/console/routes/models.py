"""A model's page: version, method, metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.deps import SessionDep
from app.console.deps import ConsoleTenant
from app.console.routes import versions
from app.console.templating import render
from app.services import models as service
from app.services import projects as projects_service

router = APIRouter()


@router.get("/models/{model_id}")
def model_page(request: Request, model_id: str, db: SessionDep, tenant: ConsoleTenant) -> Response:
    model = service.get(db=db, tenant_id=tenant.id, model_id=model_id)
    project = projects_service.get(db=db, tenant_id=tenant.id, project_id=model.project_id)
    context = {"tenant": tenant, "project": project, "model": model}
    context |= versions.model_details(db, project, model)
    return render(request, "model.html", context)
