"""Dependencies as ``Annotated`` aliases: routes read like their signatures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.api.guards import AUTHENTICATED_TENANT
from app.api.ratelimit import TokenBuckets
from app.config import Settings
from app.db.models import Project, Tenant
from app.db.session import get_sessionmaker
from app.errors import RateLimited
from app.queue import enqueue_training
from app.services import aliases as aliases_service
from app.services import projects as projects_service
from app.services import tenants as tenants_service
from app.services.jobs import Enqueue
from app.storage import BlobStore, open_store


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_db(settings: SettingsDep) -> Iterator[Session]:
    session = get_sessionmaker(settings.resolved_database_url)()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_db)]


def get_store(request: Request) -> BlobStore:
    store: BlobStore | None = getattr(request.app.state, "store", None)
    if store is None:
        store = request.app.state.store = open_store(
            request.app.state.settings.resolved_storage_url
        )
    return store


StoreDep = Annotated[BlobStore, Depends(get_store)]


def get_enqueue(request: Request, settings: SettingsDep) -> Enqueue:
    """How a new job reaches the workers of its queue: the app's own sender (in-process
    tests), else the broker."""
    enqueue: Enqueue | None = getattr(request.app.state, "enqueue", None)
    return enqueue or (
        lambda job_id, queue: enqueue_training(
            settings.resolved_broker_url, job_id, settings.broker_poll_seconds, queue
        )
    )


EnqueueDep = Annotated[Enqueue, Depends(get_enqueue)]


# The OpenAPI security scheme (Swagger UI's Authorize button); missing or malformed
# credentials are answered by ``authenticate`` with the one 401 problem document.
bearer = HTTPBearer(
    scheme_name="ApiKey",
    description="An API key: `dovecote keys create --tenant NAME` prints one.",
    auto_error=False,
)


def current_tenant(
    request: Request,
    db: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Tenant:
    """The key's tenant; then the key's rate limit (a valid key only, so buckets stay few).
    A body-carrying request's key was looked up already (:class:`app.api.guards.EarlyAuth`):
    that tenant is taken into this session without a second query."""
    key = credentials.credentials.strip() if credentials else None
    known = request.scope.get("state", {}).get(AUTHENTICATED_TENANT)
    return tenant_for_key(request, db, settings, key, known=known)


def tenant_for_key(
    request: Request,
    db: Session,
    settings: Settings,
    key: str | None,
    *,
    known: Tenant | None = None,
) -> Tenant:
    """The tenant of an API key (``known``: already authenticated from this key), and the
    key's rate limit: one lookup for the API (Bearer header) and the console (cookie)."""
    tenant = (
        db.merge(known, load=False)
        if known is not None
        else tenants_service.authenticate(db=db, key=key, admin_key=settings.api_key)
    )
    buckets: TokenBuckets | None = request.app.state.rate_buckets
    if buckets is not None and key and (wait := buckets.take(tenants_service.hash_key(key))):
        raise RateLimited(
            f"This API key sent more than {settings.tenant_rate_limit:g} requests per second "
            f"(burst {settings.tenant_rate_burst}; DOVECOTE_TENANT_RATE_LIMIT). Retry in "
            f"{wait} s.",
            retry_after=wait,
        )
    return tenant


TenantDep = Annotated[Tenant, Depends(current_tenant)]


def current_actor(
    db: SessionDep,
    settings: SettingsDep,
    tenant: TenantDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> aliases_service.Actor:
    """Who is calling (which API key of which tenant), for histories."""
    key = credentials.credentials.strip() if credentials else None
    return aliases_service.actor_of(db=db, tenant=tenant, key=key, admin_key=settings.api_key)


ActorDep = Annotated[aliases_service.Actor, Depends(current_actor)]


def current_project(project_id: str, db: SessionDep, tenant: TenantDep) -> Project:
    return projects_service.get(db=db, tenant_id=tenant.id, project_id=project_id)


ProjectDep = Annotated[Project, Depends(current_project)]

LimitQuery = Annotated[int, Query(ge=1, le=500, description="Page size (max 500).")]
CursorQuery = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]
