"""Aliases: named pointers to a project's models (`production` is what /predict serves),
their history and rollback."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.api.deps import ActorDep, CursorQuery, LimitQuery, ProjectDep, SessionDep, SettingsDep
from app.api.schemas import AliasEventOut, AliasIn, AliasOut, Page
from app.db.models import Model
from app.services import aliases as service

router = APIRouter(prefix="/v1/projects/{project_id}/aliases", tags=["aliases"])


def alias_out(name: str, model: Model | None) -> AliasOut:
    return AliasOut(
        name=name,
        model_id=model.id if model is not None else None,
        version=model.version if model is not None else None,
    )


@router.get("")
def list_aliases(project: ProjectDep, db: SessionDep) -> list[AliasOut]:
    """Every alias of the project: `production` first (model null when empty), then by name."""
    return [alias_out(name, model) for name, model in service.list_(db=db, project=project)]


@router.get("/{name}")
def get_alias(name: str, project: ProjectDep, db: SessionDep) -> AliasOut:
    return alias_out(name, service.get(db=db, project=project, name=name))


@router.put("/{name}")
def put_alias(
    name: str,
    body: AliasIn,
    project: ProjectDep,
    db: SessionDep,
    actor: ActorDep,
    settings: SettingsDep,
) -> AliasOut:
    """Point the alias at one of the project's models (creating the alias: at most
    `DOVECOTE_MAX_ALIASES_PER_PROJECT` besides `production`). `production` is what
    `POST /v1/projects/{project_id}/predict` serves."""
    model = service.point(
        db=db, project=project, name=name, model_id=body.model_id, actor=actor, settings=settings
    )
    return alias_out(name, model)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_alias(name: str, project: ProjectDep, db: SessionDep, actor: ActorDep) -> Response:
    """Remove the alias (`production`: leave it empty); its history stays."""
    service.clear(db=db, project=project, name=name, actor=actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{name}/history")
def alias_history(
    name: str,
    project: ProjectDep,
    db: SessionDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[AliasEventOut]:
    """Every move of the alias, oldest first: who, from, to, when and why."""
    items, next_cursor = service.history(
        db=db, project=project, name=name, limit=limit, cursor=cursor
    )
    return Page(items=[AliasEventOut.model_validate(e) for e in items], next_cursor=next_cursor)


@router.post("/{name}/rollback")
def rollback_alias(name: str, project: ProjectDep, db: SessionDep, actor: ActorDep) -> AliasOut:
    """Point the alias back at the model it pointed to before (the latest earlier one that
    still exists); `409 nothing_to_roll_back` when there is none."""
    return alias_out(name, service.rollback(db=db, project=project, name=name, actor=actor))
