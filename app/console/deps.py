"""Dependencies of console routes: the signed-in tenant and its project."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.api.deps import SessionDep, SettingsDep
from app.console.auth import KEY_COOKIE, ConsoleTenant
from app.db.models import Project
from app.services import aliases as aliases_service
from app.services import projects as projects_service

__all__ = ["ConsoleActor", "ConsoleProject", "ConsoleTenant"]


def console_project(project_id: str, db: SessionDep, tenant: ConsoleTenant) -> Project:
    """The tenant's project (another tenant's is a 404, as through the API)."""
    return projects_service.get(db=db, tenant_id=tenant.id, project_id=project_id)


ConsoleProject = Annotated[Project, Depends(console_project)]


def console_actor(
    request: Request, db: SessionDep, settings: SettingsDep, tenant: ConsoleTenant
) -> aliases_service.Actor:
    """Who is signed in (which API key of which tenant), for alias histories."""
    key = request.cookies.get(KEY_COOKIE)
    return aliases_service.actor_of(db=db, tenant=tenant, key=key, admin_key=settings.api_key)


ConsoleActor = Annotated[aliases_service.Actor, Depends(console_actor)]
