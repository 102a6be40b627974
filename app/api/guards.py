"""ASGI guards that run before any route reads the request body.

- :class:`EarlyAuth`: a request that carries a body is authenticated from its headers
  alone, so a wrong key is answered ``401`` before one byte of a (possibly large)
  multipart body is read (the route's :func:`app.api.deps.current_tenant` then takes the
  tenant found, :data:`AUTHENTICATED_TENANT`, instead of looking the key up again); and a
  predict takes one of its tenant's
  ``DOVECOTE_TENANT_MAX_CONCURRENT_PREDICTS`` slots (:func:`predict_slot`, shared with the
  console's quick test) for as long as it runs, or is answered ``429`` before its photos
  are read. The request's inference batches then take its tenant's turns in the
  predictor's :class:`~app.transfer.predictor.ImageBudget`
  (:func:`app.services.predict.turns_of`).
- :class:`InputGuard`: text the databases cannot store or JSON that no route should
  accept is refused with a typed ``422`` before routing, the same on SQLite and
  PostgreSQL: NUL characters (``\\u0000``, which PostgreSQL text columns reject) in the
  path, the query string or any JSON string; the non-standard JSON constants ``NaN`` and
  ``Infinity`` (SQLite would silently store them as ``null``); JSON nested deeper than
  :data:`app.strict_json.MAX_DEPTH` (Python's parser would hit its recursion limit).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import strict_json
from app.api.problems import error_response, problem_response
from app.api.ratelimit import InFlight
from app.config import Settings
from app.db.models import Tenant
from app.db.session import get_sessionmaker
from app.errors import DovecoteError, TooManyConcurrentPredicts
from app.services import predict as predict_service
from app.services import tenants as tenants_service

_BODY_METHODS = {"POST", "PUT", "PATCH"}


def _has_body(scope: Scope) -> bool:
    headers = dict(scope.get("headers") or [])
    length = headers.get(b"content-length", b"")
    return (length.isdigit() and int(length) > 0) or b"transfer-encoding" in headers


@contextmanager
def predict_slot(slots: InFlight | None, tenant_id: str, *, max_files: int) -> Iterator[None]:
    """Hold one of the tenant's predict slots (None: no limit) and take its turns in the
    inference budget for the block; :class:`TooManyConcurrentPredicts` when all are taken."""
    if slots is not None and not slots.enter(tenant_id):
        raise TooManyConcurrentPredicts(
            f"This tenant already has {slots.limit} predicts in progress here "
            "(DOVECOTE_TENANT_MAX_CONCURRENT_PREDICTS). Send more files per request "
            f"(up to {max_files}), use a batch prediction for many images, or retry when one "
            "has answered.",
            retry_after=1,
        )
    try:
        with predict_service.turns_of(tenant_id):
            yield
    finally:
        if slots is not None:
            slots.leave(tenant_id)


#: ``scope["state"]`` key of the tenant :class:`EarlyAuth` authenticated (detached from
#: its session, every column loaded).
AUTHENTICATED_TENANT = "dovecote.tenant"

#: The two predict routes: ``/v1/models/{model_id}/predict``, ``/v1/projects/{project_id}/predict``.
_PREDICT = re.compile(r"/v1/(models|projects)/[^/]+/predict/?")


class EarlyAuth:
    """Refuse a body-carrying ``/v1`` request with a missing or invalid key before reading
    it; hold a predict to its tenant's slots (``predict_slots``; None: no limit)."""

    def __init__(
        self, app: ASGIApp, settings: Settings, predict_slots: InFlight | None = None
    ) -> None:
        self.app = app
        self.settings = settings
        self.predict_slots = predict_slots

    def _tenant(self, authorization: str) -> Tenant:
        scheme, _, key = authorization.partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""
        with get_sessionmaker(self.settings.resolved_database_url)() as db:
            return tenants_service.authenticate(
                db=db, key=key or None, admin_key=self.settings.api_key
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            scope["type"] == "http"
            and scope["method"] in _BODY_METHODS
            and scope["path"].startswith("/v1/")
            and _has_body(scope)
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        slots = self.predict_slots if _PREDICT.fullmatch(scope["path"]) else None
        with ExitStack() as held:
            try:
                tenant = await run_in_threadpool(
                    self._tenant, headers.get(b"authorization", b"").decode("latin-1")
                )
                held.enter_context(
                    predict_slot(slots, tenant.id, max_files=self.settings.predict_max_files)
                )
            except DovecoteError as exc:
                await error_response(exc)(scope, receive, send)
                return
            scope.setdefault("state", {})[AUTHENTICATED_TENANT] = tenant
            await self.app(scope, receive, send)


def _refuse(detail: str) -> Any:
    return problem_response(422, "invalid_characters", "Invalid characters or JSON", detail)


class InputGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"")
        if "\x00" in scope["path"] or b"\x00" in query or b"%00" in query.lower():
            await _refuse("NUL characters (%00) are not accepted in paths or query strings.")(
                scope, receive, send
            )
            return
        headers = dict(scope.get("headers") or [])
        if (
            scope["method"] not in _BODY_METHODS
            or b"json" not in headers.get(b"content-type", b"").lower()
        ):
            await self.app(scope, receive, send)
            return

        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            strict_json.loads(body)
        except strict_json.UnsafeJson as exc:
            await _refuse(str(exc))(scope, receive, send)
            return
        except ValueError:
            pass  # not JSON at all: the route's own validation answers it

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
