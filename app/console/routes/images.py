"""A project's images: upload (files or zips, through the API's ingest service), relabel,
delete, and thumbnails from the blob store."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from starlette.responses import RedirectResponse, Response

from app.api.deps import SessionDep, SettingsDep, StoreDep
from app.console import auth
from app.console.deps import ConsoleProject, ConsoleTenant
from app.console.routes.projects import project_context
from app.console.templating import render
from app.errors import DovecoteError
from app.services import images as service

router = APIRouter(prefix="/projects/{project_id}/images")
_NO_FILTERS = {"label": "", "split": "", "domain": "", "cursor": None}


@router.post("")
def upload(
    request: Request,
    db: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    tenant: ConsoleTenant,
    project: ConsoleProject,
    files: Annotated[list[UploadFile], File()],
    label: Annotated[str, Form(max_length=100)] = "",
    domain: Annotated[Literal["target", "source"], Form()] = "target",
    split: Annotated[Literal["auto", "train", "test"], Form()] = "auto",
) -> Response:
    """Per-file results on the project page: stored, duplicates, rejected with reasons."""
    payload = [(f.filename or "upload", f.file.read()) for f in files if f.filename]
    try:
        result = service.ingest(
            db=db, store=store, settings=settings, project=project, files=payload,
            label=label.strip() or None, domain=domain, split=split,
        )  # fmt: skip
    except DovecoteError as exc:
        db.rollback()
        context = project_context(db, tenant, project, _NO_FILTERS, upload_error=exc.detail)
        return render(request, "project.html", context, status_code=exc.status)
    context = project_context(db, tenant, project, _NO_FILTERS, upload=result)
    return render(request, "project.html", context)


def _back(project_id: str, back: str | None) -> RedirectResponse:
    target = auth.safe_next(back) if back else f"/console/projects/{project_id}"
    return RedirectResponse(target, status_code=303)


@router.post("/{image_id}")
def relabel(
    image_id: str,
    db: SessionDep,
    project: ConsoleProject,
    label: Annotated[str, Form(max_length=100)] = "",
    back: Annotated[str | None, Form()] = None,
) -> Response:
    """Set the label (empty: unlabeled); a bad label is the error page (422)."""
    image = service.get(db=db, project=project, image_id=image_id)
    service.update(db=db, project=project, image=image, changes={"label": label.strip() or None})
    return _back(project.id, back)


@router.post("/{image_id}/delete")
def delete(
    image_id: str,
    db: SessionDep,
    store: StoreDep,
    project: ConsoleProject,
    back: Annotated[str | None, Form()] = None,
) -> Response:
    service.delete(db=db, store=store, image=service.get(db=db, project=project, image_id=image_id))
    return _back(project.id, back)


@router.get("/{image_id}/thumbnail")
def thumbnail(
    request: Request,
    image_id: str,
    db: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    project: ConsoleProject,
) -> Response:
    """A JPEG thumbnail; the image's bytes never change, so its ETag is their sha256."""
    image = service.get(db=db, project=project, image_id=image_id)
    headers = {"ETag": f'"{image.sha256}-t"', "Cache-Control": "private, max-age=86400"}
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    return Response(
        service.thumbnail(store=store, settings=settings, image=image),
        media_type="image/jpeg",
        headers=headers,
    )
