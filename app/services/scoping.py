"""Tenant scoping of rows that hang off a project (jobs, models)."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from app.db.models import Project
from app.errors import NotFound
from app.services.pagination import paginate

T = TypeVar("T")


def get_owned(db: Session, cls: type[T], row_id: str, *, tenant_id: str, resource: str) -> T:
    """Row ``row_id`` of ``cls`` if its project belongs to the tenant, else ``NotFound``
    (another tenant's id reads exactly like a missing one)."""
    row: Any = db.get(cls, row_id)
    if row is not None:
        project = db.get(Project, row.project_id)
        if project is not None and project.tenant_id == tenant_id:
            return row  # type: ignore[no-any-return]
    raise NotFound(f"No {resource} {row_id!r}.", resource=resource)


def list_in_project(
    db: Session,
    cls: Any,
    *,
    project: Project,
    limit: int,
    cursor: str | None,
    where: ColumnElement[bool] | None = None,
) -> tuple[list[Any], str | None]:
    """The project's rows of ``cls`` (those matching ``where``), a page at a time."""
    stmt = select(cls).where(cls.project_id == project.id)
    if where is not None:
        stmt = stmt.where(where)
    return paginate(db, stmt, cls.id, limit=limit, cursor=cursor)


def newest_in_project(
    db: Session,
    cls: Any,
    *,
    project: Project,
    limit: int,
    where: ColumnElement[bool] | None = None,
) -> list[Any]:
    """The project's ``limit`` newest rows of ``cls`` (those matching ``where``), newest
    first (ids sort by time)."""
    stmt = select(cls).where(cls.project_id == project.id)
    if where is not None:
        stmt = stmt.where(where)
    return list(db.scalars(stmt.order_by(cls.id.desc()).limit(limit)))
