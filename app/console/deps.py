"""Dependencies of console routes: the signed-in tenant and its project."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.api.deps import SessionDep
from app.console.auth import ConsoleTenant
from app.db.models import Project
from app.services import projects as projects_service

__all__ = ["ConsoleProject", "ConsoleTenant"]


def console_project(project_id: str, db: SessionDep, tenant: ConsoleTenant) -> Project:
    """The tenant's project (another tenant's is a 404, as through the API)."""
    return projects_service.get(db=db, tenant_id=tenant.id, project_id=project_id)


ConsoleProject = Annotated[Project, Depends(console_project)]
