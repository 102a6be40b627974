"""Webhooks: a project's (or a tenant's) URLs that receive a signed POST per event, and
their deliveries."""

from __future__ import annotations

import json

from fastapi import APIRouter, Response, status
from sqlalchemy.orm import Session

from app.api.deps import CursorQuery, LimitQuery, ProjectDep, SessionDep, SettingsDep, TenantDep
from app.api.schemas import DeliveryOut, Page, WebhookCreated, WebhookIn, WebhookOut
from app.config import Settings
from app.db.models import Webhook, WebhookDelivery
from app.services import webhooks as service

router = APIRouter(tags=["webhooks"])


def _create(
    body: WebhookIn, db: Session, settings: Settings, response: Response, *, tenant_id: str,
    project_id: str | None,
) -> WebhookCreated:  # fmt: skip
    webhook, secret = service.create(
        db=db, settings=settings, tenant_id=tenant_id, project_id=project_id, url=body.url,
        events=list(body.events),
    )  # fmt: skip
    response.headers["Location"] = f"/v1/webhooks/{webhook.id}"
    return WebhookCreated(**WebhookOut.model_validate(webhook).model_dump(), secret=secret)


def _page(items: list[Webhook], next_cursor: str | None) -> Page[WebhookOut]:
    return Page(items=[WebhookOut.model_validate(w) for w in items], next_cursor=next_cursor)


@router.post("/v1/projects/{project_id}/webhooks", status_code=status.HTTP_201_CREATED)
def create_project_webhook(
    body: WebhookIn, project: ProjectDep, db: SessionDep, settings: SettingsDep, response: Response
) -> WebhookCreated:
    """Register a URL for the project's events. The answer carries the signing `secret`,
    shown this once."""
    return _create(body, db, settings, response, tenant_id=project.tenant_id,
                   project_id=project.id)  # fmt: skip


@router.get("/v1/projects/{project_id}/webhooks")
def list_project_webhooks(
    project: ProjectDep, db: SessionDep, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> Page[WebhookOut]:
    """The project's own webhooks (the tenant's, for every project: `GET /v1/webhooks`)."""
    return _page(*service.list_(db=db, tenant_id=project.tenant_id, project_id=project.id,
                                limit=limit, cursor=cursor))  # fmt: skip


@router.post("/v1/webhooks", status_code=status.HTTP_201_CREATED)
def create_tenant_webhook(
    body: WebhookIn, tenant: TenantDep, db: SessionDep, settings: SettingsDep, response: Response
) -> WebhookCreated:
    """Register a URL for the events of every project of the tenant (`project_id` null)."""
    return _create(body, db, settings, response, tenant_id=tenant.id, project_id=None)


@router.get("/v1/webhooks")
def list_webhooks(
    tenant: TenantDep, db: SessionDep, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> Page[WebhookOut]:
    """Every webhook of the tenant: its projects' and its own."""
    return _page(*service.list_(db=db, tenant_id=tenant.id, project_id=None, limit=limit,
                                cursor=cursor))  # fmt: skip


@router.get("/v1/webhooks/{webhook_id}")
def get_webhook(webhook_id: str, tenant: TenantDep, db: SessionDep) -> WebhookOut:
    return WebhookOut.model_validate(service.get(db=db, tenant_id=tenant.id, webhook_id=webhook_id))


@router.delete("/v1/webhooks/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(webhook_id: str, tenant: TenantDep, db: SessionDep) -> Response:
    """Delete the webhook and its deliveries; pending ones are not sent."""
    service.delete(db=db, webhook=service.get(db=db, tenant_id=tenant.id, webhook_id=webhook_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _delivery_out(d: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=d.id, webhook_id=d.webhook_id, event=d.event, event_id=d.event_id,
        status=d.status,  # type: ignore[arg-type]
        attempts=d.attempts, next_attempt_at=d.next_attempt_at,
        last_status_code=d.last_status_code, last_error=d.last_error,
        attempt_log=d.attempt_log,  # type: ignore[arg-type]
        body=json.loads(d.body), created_at=d.created_at, last_attempt_at=d.last_attempt_at,
        delivered_at=d.delivered_at,
    )  # fmt: skip


@router.get("/v1/webhooks/{webhook_id}/deliveries")
def list_deliveries(
    webhook_id: str,
    tenant: TenantDep,
    db: SessionDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[DeliveryOut]:
    """The webhook's deliveries, oldest first: event, status, attempts (each with its
    status code or error), the next attempt."""
    webhook = service.get(db=db, tenant_id=tenant.id, webhook_id=webhook_id)
    items, next_cursor = service.deliveries(db=db, webhook=webhook, limit=limit, cursor=cursor)
    return Page(items=[_delivery_out(d) for d in items], next_cursor=next_cursor)
