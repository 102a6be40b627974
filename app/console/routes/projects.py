"""Projects: the list, the create form, and a project's page (classes, upload, images)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Query, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from app.api.deps import SessionDep, SettingsDep
from app.api.routes.projects import project_out
from app.api.schemas import ProjectCreate
from app.console.deps import ConsoleProject, ConsoleTenant
from app.console.templating import render
from app.db.models import Job, Model
from app.errors import DovecoteError
from app.services import images as images_service
from app.services import jobs as jobs_service
from app.services import projects as service
from app.services import quotas
from app.services.scoping import newest_in_project
from app.transfer.data import DOMAINS, SPLITS

router = APIRouter()
PAGE_SIZE = 48
UNLABELED = "(unlabeled)"


@router.get("/")
def project_list(
    request: Request, db: SessionDep, tenant: ConsoleTenant, cursor: str | None = None
) -> Response:
    items, next_cursor = service.list_(db=db, tenant_id=tenant.id, limit=50, cursor=cursor)
    projects = [project_out(db, p) for p in items]
    context = {"tenant": tenant, "projects": projects, "next_cursor": next_cursor}
    return render(request, "projects.html", context)


def parse_classes(text: str, *, negative: bool) -> list[dict[str, Any]]:
    """One class a line, ``name`` or ``name: description`` (the description helps zero-shot)."""
    out = []
    for line in text.splitlines():
        name, _, description = line.partition(":")
        if name.strip():
            out.append(
                {"name": name.strip(), "description": description.strip(), "negative": negative}
            )
    return out


def validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()
    )


@router.get("/projects/new")
def new_project(request: Request, tenant: ConsoleTenant) -> Response:
    return render(request, "project_new.html", {"tenant": tenant, "form": {}})


@router.post("/projects")
def create_project(
    request: Request,
    db: SessionDep,
    settings: SettingsDep,
    tenant: ConsoleTenant,
    name: Annotated[str, Form()],
    description: Annotated[str, Form()] = "",
    classes: Annotated[str, Form()] = "",
    negative_classes: Annotated[str, Form()] = "",
) -> Response:
    form = {
        "name": name, "description": description, "classes": classes,
        "negative_classes": negative_classes,
    }  # fmt: skip
    try:
        body = ProjectCreate(
            name=name.strip(),
            description=description.strip(),
            classes=parse_classes(classes, negative=False)
            + parse_classes(negative_classes, negative=True),
        )
        quotas.check_new_project(db=db, settings=settings, tenant_id=tenant.id)
        project = service.create(
            db=db, tenant_id=tenant.id, name=body.name, description=body.description,
            classes=body.class_dicts(),
        )  # fmt: skip
    except (ValidationError, DovecoteError) as exc:
        db.rollback()
        error = validation_message(exc) if isinstance(exc, ValidationError) else exc.detail
        context = {"tenant": tenant, "form": form, "error": error}
        return render(request, "project_new.html", context, status_code=422)
    return RedirectResponse(f"/console/projects/{project.id}", status_code=303)


@router.get("/projects/{project_id}")
def project_page(
    request: Request,
    db: SessionDep,
    tenant: ConsoleTenant,
    project: ConsoleProject,
    label: Annotated[str | None, Query(max_length=100)] = None,
    split: Annotated[Literal["auto", "train", "test", ""] | None, Query()] = None,
    domain: Annotated[Literal["target", "source", ""] | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    return render(request, "project.html", project_context(db, tenant, project, {
        "label": label or "", "split": split or "", "domain": domain or "", "cursor": cursor,
    }))  # fmt: skip


def project_context(
    db: Any, tenant: Any, project: Any, filters: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """What the project page shows: classes with counts and a thumbnail, the filtered page
    of images, recent jobs and the models."""
    out = project_out(db, project)
    thumbs = {}
    for c in out.classes:
        first, _ = images_service.list_(db=db, project=project, limit=1, cursor=None, label=c.name)
        thumbs[c.name] = first[0].id if first else None
    label = filters["label"]
    images, next_cursor = images_service.list_(
        db=db, project=project, limit=PAGE_SIZE, cursor=filters["cursor"],
        label=label if label and label != UNLABELED else None,
        unlabeled=True if label == UNLABELED else None,
        split=filters["split"] or None, domain=filters["domain"] or None,
    )  # fmt: skip
    # training jobs only, as /v1/projects/{id}/jobs lists them (no batch predictions)
    jobs = newest_in_project(
        db, Job, project=project, limit=10, where=Job.method.not_in(jobs_service.NOT_TRAINING)
    )
    models = newest_in_project(db, Model, project=project, limit=50)
    return {
        "tenant": tenant, "project": out, "thumbs": thumbs, "images": images,
        "next_cursor": next_cursor, "filters": filters, "splits": SPLITS, "domains": DOMAINS,
        "unlabeled": UNLABELED, "jobs": jobs, "models": models, **extra,
    }  # fmt: skip
