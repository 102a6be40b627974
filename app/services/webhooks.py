"""Webhooks: URLs that receive a signed JSON POST when an event happens (a job ended, ...).

Registration (:func:`create`) checks the URL against server-side request forgery: only
``http``/``https``, and (unless ``DOVECOTE_WEBHOOK_ALLOW_PRIVATE``) a host whose every
address is public. :func:`emit` records one :class:`WebhookDelivery` per matching webhook in
the caller's transaction (an outbox: the event is sent if and only if what caused it was
committed); the worker's delivery loop (:func:`deliver_due`) sends them, checks the address
again after resolving it and connects to that very address, never follows redirects, and
retries failures on ``DOVECOTE_WEBHOOK_RETRY_SECONDS``.

Each body is ``{"id": event id, "event", "created_at", "project_id", "data"}``, sent with

    Dovecote-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>
    Dovecote-Timestamp: <unix seconds of this attempt>
    Dovecote-Event: <event>
    Dovecote-Delivery: <delivery id>

Every attempt of a delivery sends the same bytes, so ``id`` tells a receiver a retry from a
new event.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy import delete as delete_rows
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from app import sealing
from app.config import Settings
from app.db.base import new_id, utcnow
from app.db.models import Job, Model, Project, Webhook, WebhookDelivery
from app.errors import NotFound, UnknownWebhookEvent, WebhookUrlRefused
from app.services import quotas
from app.services.pagination import paginate

log = logging.getLogger(__name__)

#: Every event a webhook may subscribe to, with what it means. Adding one is adding a line
#: here and calling :func:`emit` where it happens.
EVENTS: dict[str, str] = {
    "job.finished": "A job ended: `data.job.status` is `succeeded`, `failed` (a timed-out run "
    "included: `error.code` `job_timed_out`) or `cancelled`.",
    "model.drift": "A model's live inputs or answers drifted from what it was trained on.",
}
SIGNATURE_HEADER = "Dovecote-Signature"
TIMESTAMP_HEADER = "Dovecote-Timestamp"
#: Response bytes read (for ``last_error``) before the connection is closed.
MAX_RESPONSE_BYTES = 1024
#: Extra seconds past the HTTP timeout before a claimed attempt counts as lost.
LEASE_MARGIN_SECONDS = 60.0
#: Due deliveries one :func:`deliver_due` call takes.
DELIVERY_BATCH = 20
#: :func:`deliver_due` reads this many batches' worth of due rows to let tenants take turns.
DUE_WINDOW = 5


def _iso(value: datetime) -> str:
    """ISO-8601 UTC with ``Z`` (SQLite hands back naive datetimes; all are stored as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- the URL check --------------------------------------------------------------------------


def _refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a webhook may not reach ``ip`` (None: a public address)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind in ("loopback", "link_local", "multicast", "private", "reserved", "unspecified"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if ip.is_global else "not public"


@dataclass(frozen=True)
class Target:
    """Where a webhook URL points: its parts and, once resolved, the address to connect to."""

    url: str
    scheme: str
    host: str
    port: int
    address: str | None = None

    def request(self) -> tuple[str, dict[str, str], dict[str, Any]]:
        """URL, headers and httpx extensions of a request to this target: pinned to
        ``address`` when resolved (``Host`` and TLS server name stay the URL's host)."""
        if self.address is None:
            return self.url, {}, {}
        parts = urlsplit(self.url)
        ip = ipaddress.ip_address(self.address)
        literal = f"[{ip}]" if ip.version == 6 else str(ip)
        default = {"http": 80, "https": 443}[self.scheme]
        userinfo, at, host = parts.netloc.rpartition("@")
        netloc = userinfo + at + (literal if self.port == default else f"{literal}:{self.port}")
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        extensions = {"sni_hostname": self.host} if self.scheme == "https" else {}
        return url, {"Host": host}, extensions


def check_url(url: str, *, allow_private: bool) -> Target:
    """The target of ``url``, or :class:`WebhookUrlRefused`: not ``http``/``https``, no
    host, a space or control character, or (unless ``allow_private``) a host that does not resolve or has an address
    that is not public (loopback, private, link-local, multicast, reserved...). Resolved:
    the target carries the first address, which a request then connects to."""
    if any(c.isspace() or not c.isprintable() for c in url):
        raise WebhookUrlRefused("The URL has a space or a control character.", url=url)
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError as exc:
        raise WebhookUrlRefused(f"Not a valid URL: {exc}.", url=url) from exc
    if scheme not in ("http", "https"):
        raise WebhookUrlRefused(
            f"Webhook URLs are http:// or https://, not {parts.scheme or 'schemeless'}.", url=url
        )
    if not host:
        raise WebhookUrlRefused("The URL names no host.", url=url)
    target = Target(url, scheme, host, port or {"http": 80, "https": 443}[scheme])
    if allow_private:
        return target
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, target.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise WebhookUrlRefused(f"The host {host!r} does not resolve.", url=url) from exc
        addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    for ip in addresses:
        if (why := _refusal(ip)) is not None:
            raise WebhookUrlRefused(
                f"The host {host!r} has a {why} address ({ip}): webhooks go to public "
                "addresses only (DOVECOTE_WEBHOOK_ALLOW_PRIVATE=true lifts this, for "
                "trusted networks).",
                url=url,
            )
    return Target(url, scheme, host, target.port, str(addresses[0]))


# --- registration -------------------------------------------------------------------------


def create(
    *,
    db: Session,
    settings: Settings,
    tenant_id: str,
    project_id: str | None,
    url: str,
    events: list[str],
) -> tuple[Webhook, str]:
    """Register ``url`` for ``events`` of one project (or, ``project_id`` None, of every
    project of the tenant), within the webhook quotas (:func:`quotas.check_new_webhook`);
    returns the webhook and its secret, which is not shown again (it is stored sealed:
    :mod:`app.sealing`)."""
    unknown = sorted(set(events) - set(EVENTS))
    if unknown or not events:
        raise UnknownWebhookEvent(
            f"Unknown event(s) {', '.join(unknown) or '(none given)'}; known: "
            f"{', '.join(sorted(EVENTS))}.",
            events=unknown,
        )
    quotas.check_new_webhook(db=db, settings=settings, tenant_id=tenant_id, project_id=project_id)
    check_url(url, allow_private=settings.webhook_allow_private)
    secret = "whsec_" + secrets.token_urlsafe(32)
    webhook = Webhook(
        tenant_id=tenant_id,
        project_id=project_id,
        url=url,
        events=sorted(set(events)),
        secret=sealing.seal(secret, settings=settings),
    )
    db.add(webhook)
    db.commit()
    return webhook, secret


def reseal_secrets(*, db: Session, settings: Settings) -> dict[str, int]:
    """Seal every webhook secret with the first key of ``settings`` (those stored in clear
    before sealing existed, and those sealed with an older key); counts by what was done."""
    counts = {"sealed": 0, "rotated": 0}
    for webhook in db.scalars(select(Webhook).order_by(Webhook.id)):
        counts["rotated" if sealing.is_sealed(webhook.secret) else "sealed"] += 1
        webhook.secret = sealing.reseal(webhook.secret, settings=settings)
    db.commit()
    return counts


def get(*, db: Session, tenant_id: str, webhook_id: str) -> Webhook:
    webhook = db.get(Webhook, webhook_id)
    if webhook is None or webhook.tenant_id != tenant_id:
        raise NotFound(f"No webhook {webhook_id!r}.", resource="webhook")
    return webhook


def list_(
    *, db: Session, tenant_id: str, project_id: str | None, limit: int, cursor: str | None
) -> tuple[list[Webhook], str | None]:
    """The project's webhooks; ``project_id`` None: every webhook of the tenant."""
    stmt = select(Webhook).where(Webhook.tenant_id == tenant_id)
    if project_id is not None:
        stmt = stmt.where(Webhook.project_id == project_id)
    return paginate(db, stmt, Webhook.id, limit=limit, cursor=cursor)


def delete(*, db: Session, webhook: Webhook) -> None:
    """Delete the webhook and its deliveries (pending ones are not sent)."""
    db.delete(webhook)
    db.commit()


def deliveries(
    *, db: Session, webhook: Webhook, limit: int, cursor: str | None
) -> tuple[list[WebhookDelivery], str | None]:
    stmt = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook.id)
    return paginate(db, stmt, WebhookDelivery.id, limit=limit, cursor=cursor)


# --- events ---------------------------------------------------------------------------------


def emit(
    session: Session, *, project_id: str, event: str, payload: dict[str, Any]
) -> list[WebhookDelivery]:
    """Record a delivery of ``event`` (body ``data``: ``payload``, JSON-serialisable) to
    each webhook of the project, or of its tenant, subscribed to it. Added to ``session``,
    not committed: they are sent (by the worker) once the caller commits."""
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r}; add it to EVENTS")
    project = session.get(Project, project_id)
    if project is None:
        return []
    hooks = session.scalars(
        select(Webhook).where(
            Webhook.tenant_id == project.tenant_id,
            or_(Webhook.project_id == project_id, Webhook.project_id.is_(None)),
        )
    )
    now = utcnow()
    event_id = new_id("evt")
    body = json.dumps(
        {
            "id": event_id,
            "event": event,
            "created_at": _iso(now),
            "project_id": project_id,
            "data": payload,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )
    rows = [
        WebhookDelivery(
            webhook_id=hook.id,
            event=event,
            event_id=event_id,
            body=body,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            attempt_log=[],
            created_at=now,
        )
        for hook in hooks
        if event in hook.events
    ]
    session.add_all(rows)
    return rows


#: The kind a ``job.finished`` event names for each ``Job.method`` that is not a training
#: method (:data:`app.services.jobs.BATCH_PREDICT`, :data:`~app.services.jobs.AUDIT`; that
#: module imports this one).
_OTHER_KINDS = {"batch_predict": "batch_prediction", "audit": "audit"}


def job_summary(session: Session, job: Job) -> dict[str, Any]:
    """What ``job.finished`` says of a job: id, project, kind (``training``,
    ``batch_prediction`` or ``audit``), method, status, error code and detail, its model
    (id and version: the one trained, or the one a batch prediction used; none for an
    audit) and whether it was promoted (only a training job promotes; else ``null``)."""
    model = session.get(Model, job.model_id) if job.model_id else None
    error = job.error
    kind = _OTHER_KINDS.get(job.method, "training")
    return {
        "job": {
            "id": job.id,
            "project_id": job.project_id,
            "kind": kind,
            "method": job.method,
            "status": job.status,
            "error": {"code": error.get("code"), "detail": error.get("detail")} if error else None,
            "model_id": job.model_id,
            "model_version": model.version if model is not None else None,
            "promotion": job.promotion if kind == "training" else None,
            "finished_at": _iso(job.finished_at) if job.finished_at else None,
        }
    }


def job_finished(session: Session, job_id: str) -> list[WebhookDelivery]:
    """Emit ``job.finished`` for a job that just ended (in the caller's transaction)."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        return []
    return emit(
        session, project_id=job.project_id, event="job.finished", payload=job_summary(session, job)
    )


# --- sending --------------------------------------------------------------------------------


def signature(secret: str, body: bytes) -> str:
    """The ``Dovecote-Signature`` value: ``sha256=`` + hex HMAC-SHA256(secret, body)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def retry_delay(settings: Settings, attempts: int) -> float | None:
    """Seconds before the next attempt after ``attempts`` failed ones; None: give up."""
    schedule = settings.webhook_retry_seconds
    return schedule[attempts - 1] if attempts <= len(schedule) else None


def _claim(db: Session, delivery_id: str, lease: float) -> bool:
    now = utcnow()
    claimed = db.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= now,
        )
        .values(
            attempts=WebhookDelivery.attempts + 1,
            next_attempt_at=now + timedelta(seconds=lease),
            last_attempt_at=now,
        )
    ).rowcount
    db.commit()
    return bool(claimed)


async def _attempt(
    client: httpx.AsyncClient, settings: Settings, url: str, stored_secret: str,
    delivery: WebhookDelivery,
) -> tuple[int | None, str | None]:  # fmt: skip
    """One attempt, the host's lookup included, within ``webhook_timeout_seconds`` in all:
    (status code, error); error None means delivered (a 2xx). httpx's timeouts bound each
    read, so a receiver that drips a byte now and then would hold a connection for hours;
    this deadline bounds the whole attempt. ``stored_secret``: the webhook's secret as
    stored (sealed)."""
    try:
        secret = sealing.unseal(stored_secret, settings=settings)
    except sealing.Unsealable as exc:
        return None, f"not sent: {exc}"
    deadline = settings.webhook_timeout_seconds
    try:
        async with asyncio.timeout(deadline):
            try:
                target = await asyncio.to_thread(
                    check_url, url, allow_private=settings.webhook_allow_private
                )
            except WebhookUrlRefused as exc:
                return None, f"refused: {exc.detail}"
            return await send(client, target, secret, delivery)
    except TimeoutError:
        return None, f"timed out: no complete answer within {deadline:g} s"


async def send(
    client: httpx.AsyncClient, target: Target, secret: str, delivery: WebhookDelivery
) -> tuple[int | None, str | None]:
    """POST ``delivery``'s body, signed, to ``target`` (its checked address when it has
    one); redirects are not followed. Returns (status code, error): error None for a 2xx."""
    body = delivery.body.encode()
    request_url, headers, extensions = target.request()
    headers.update(
        {
            "Content-Type": "application/json",
            "User-Agent": "Dovecote-Webhook/1",
            SIGNATURE_HEADER: signature(secret, body),
            TIMESTAMP_HEADER: str(int(time.time())),
            "Dovecote-Event": delivery.event,
            "Dovecote-Delivery": delivery.id,
        }
    )
    try:
        request = client.build_request(
            "POST", request_url, content=body, headers=headers, extensions=extensions
        )
        response = await client.send(request, stream=True)
        try:
            text = b""
            async for chunk in response.aiter_bytes():
                text += chunk
                if len(text) >= MAX_RESPONSE_BYTES:
                    break
        finally:
            await response.aclose()
    except Exception as exc:  # every attempt ends recorded, whatever went wrong
        return None, f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= response.status_code < 300:
        return response.status_code, None
    snippet = text[:200].decode(errors="replace").strip()
    return response.status_code, f"HTTP {response.status_code}" + (
        f": {snippet}" if snippet else ""
    )


def _record(
    db: Session, settings: Settings, delivery_id: str, code: int | None, error: str | None,
    seconds: float,
) -> str:  # fmt: skip
    delivery = db.get(WebhookDelivery, delivery_id, populate_existing=True)
    if delivery is None:  # its webhook was deleted meanwhile
        return "gone"
    now = utcnow()
    entry = {
        "at": _iso(now),
        "status_code": code,
        "error": error,
        "seconds": round(seconds, 3),
    }
    delivery.attempt_log = [*delivery.attempt_log, entry]
    delivery.last_status_code, delivery.last_error = code, error
    if error is None:
        delivery.status, delivery.next_attempt_at, delivery.delivered_at = "succeeded", None, now
    elif (delay := retry_delay(settings, delivery.attempts)) is None:
        delivery.status, delivery.next_attempt_at = "failed", None
    else:
        delivery.next_attempt_at = now + timedelta(seconds=delay)
    db.commit()
    return delivery.status


def fair_order(due: list[tuple[str, str]], limit: int) -> list[str]:
    """Up to ``limit`` delivery ids from ``due`` ((delivery id, tenant id), most overdue
    first), taking tenants in turn: each tenant's most overdue first, then each one's
    second... so a tenant with many due deliveries cannot fill a batch while another's
    wait."""
    queues: dict[str, list[str]] = {}
    for delivery_id, tenant_id in due:
        queues.setdefault(tenant_id, []).append(delivery_id)
    order: list[str] = []
    for rank in range(max((len(q) for q in queues.values()), default=0)):
        order += [q[rank] for q in queues.values() if rank < len(q)]
    return order[:limit]


async def _attempt_all(
    settings: Settings, claimed: list[tuple[WebhookDelivery, str, str]]
) -> list[tuple[int | None, str | None, float]]:
    """Every claimed delivery's attempt, ``webhook_concurrency`` at a time: (status code,
    error, seconds) each, in order."""
    slots = asyncio.Semaphore(settings.webhook_concurrency)
    limits = httpx.Limits(max_connections=settings.webhook_concurrency)
    timeout = settings.webhook_timeout_seconds
    async with httpx.AsyncClient(follow_redirects=False, limits=limits, timeout=timeout) as client:

        async def one(
            row: tuple[WebhookDelivery, str, str],
        ) -> tuple[int | None, str | None, float]:
            delivery, url, secret = row
            async with slots:
                started = time.monotonic()
                code, error = await _attempt(client, settings, url, secret, delivery)
                return code, error, time.monotonic() - started

        return await asyncio.gather(*map(one, claimed))


def deliver_due(*, db: Session, settings: Settings, limit: int = DELIVERY_BATCH) -> dict[str, int]:
    """Send the deliveries that are due (one attempt each, ``webhook_concurrency`` at a
    time, tenants taking turns: :func:`fair_order`); returns counts by outcome:
    ``succeeded``, ``failed`` (gave up), ``pending`` (will retry), ``gone``."""
    due = db.execute(
        select(WebhookDelivery.id, Webhook.tenant_id)
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= utcnow())
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit * DUE_WINDOW)
    ).all()
    db.commit()
    counts: dict[str, int] = {}
    if not due:  # the common case, every poll: no client (its TLS context costs ~20 ms CPU)
        return counts
    order = fair_order([(r.id, r.tenant_id) for r in due], limit)
    # The batch ends within ceil(attempts / slots) deadlines: the claims' lease covers it.
    rounds = -(-len(order) // settings.webhook_concurrency)
    lease = rounds * settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS
    claimed: list[tuple[WebhookDelivery, str, str]] = []
    for delivery_id in order:
        if not _claim(db, delivery_id, lease):
            continue  # another worker took it
        row = db.execute(
            select(WebhookDelivery, Webhook.url, Webhook.secret)
            .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
            .where(WebhookDelivery.id == delivery_id)
        ).first()
        db.commit()  # no transaction stays open during the requests
        if row is not None:
            claimed.append((row[0], row[1], row[2]))
    outcomes = asyncio.run(_attempt_all(settings, claimed)) if claimed else []
    for (delivery, _, _), (code, error, seconds) in zip(claimed, outcomes, strict=True):
        if error is not None:
            log.warning("webhook delivery %s attempt %d: %s", delivery.id, delivery.attempts, error)
        outcome = _record(db, settings, delivery.id, code, error, seconds)
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def sweep_old(*, db: Session, days: float, now: datetime | None = None) -> dict[str, int]:
    """Delete finished deliveries (``succeeded`` or ``failed``) created over ``days`` ago."""
    cutoff = (now or utcnow()) - timedelta(days=days)
    deleted = db.execute(
        delete_rows(WebhookDelivery).where(
            WebhookDelivery.status.in_(("succeeded", "failed")),
            WebhookDelivery.created_at < cutoff,
        )
    ).rowcount
    db.commit()
    return {"deliveries_deleted": deleted}
