"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline

import app
from app import allocator, console
from app.api import problems
from app.api.guards import EarlyAuth, InputGuard
from app.api.limits import BodySizeLimit
from app.api.ratelimit import InFlight, TokenBuckets
from app.api.routes import (
    aliases,
    batch_predictions,
    images,
    jobs,
    meta,
    models,
    predictions,
    projects,
    usage,
    webhooks,
)
from app.config import Settings, get_settings
from app.services import backbones as learned_backbones
from app.services import predict as predict_service
from app.services.jobs import Enqueue

log = logging.getLogger(__name__)


def _operation_id(route: APIRoute) -> str:
    """Stable OpenAPI operation ids (the function name), so generated clients keep names."""
    return route.name


# The predict routes, knocked on once at start (:func:`knock_predict_routes`).
PREDICT_PATHS = ("/v1/models/-/predict", "/v1/projects/-/predict")


def knock_predict_routes(api: FastAPI) -> list[int]:
    """POST each of :data:`PREDICT_PATHS` once, in-process, without a body and with a key
    no tenant has; each answers 401 (the key looked up, nothing else read, nothing
    written). On the way FastAPI builds what it otherwise builds on the first request
    that reaches a route: its router's route table (every route's dependencies) and the
    endpoint's context. Returns the status codes."""

    async def knock() -> list[int]:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://prewarm") as client:
            headers = {"Authorization": "Bearer -"}
            return [
                (await client.post(path, headers=headers)).status_code for path in PREDICT_PATHS
            ]

    return asyncio.run(knock())


def _prewarm(api: FastAPI, settings: Settings, warm: threading.Event) -> None:
    """What the first predict would pay for, done before ``/readyz`` says ready: the
    default backbone, the SQL statements of a predict, the predict routes. A step that
    fails is logged and left to the first request (which says what is wrong)."""
    steps: list[tuple[str, Callable[[], object]]] = [
        ("the default backbone", lambda: predict_service.prewarm(settings=settings)),
        ("the reads of a predict", lambda: predict_service.warm_reads(settings=settings)),
        ("the predict routes", lambda: knock_predict_routes(api)),
    ]
    try:
        for what, step in steps:
            try:
                step()
            except Exception:
                log.warning("could not prewarm %s", what, exc_info=True)
    finally:
        warm.set()


def create_app(
    settings: Settings | None = None,
    *,
    enqueue: Enqueue | None = None,
    worker_ready: Callable[[], bool] | None = None,
) -> FastAPI:
    """Build the API. ``enqueue`` replaces the Celery sender (used by in-process tests);
    ``worker_ready`` (``dovecote serve``) tells ``/readyz`` whether its worker is up.

    With ``DOVECOTE_PREWARM`` the first predict's work is done at start (:func:`_prewarm`),
    on a thread (so ``/healthz`` answers meanwhile); ``/readyz`` says ready once it is done. glibc malloc is
    set for serving first (:mod:`app.allocator`)."""
    settings = settings or get_settings()
    allocator.tune(
        mmap_threshold=settings.malloc_mmap_threshold, arena_max=settings.malloc_arena_max
    )
    learned_backbones.install(settings)
    warm = threading.Event()
    if not settings.prewarm:
        warm.set()

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        if not warm.is_set():
            threading.Thread(
                target=_prewarm, args=(api, settings, warm), name="prewarm", daemon=True
            ).start()
        yield

    # Swagger UI and ReDoc served from the package's own copies of their assets, never a CDN:
    # the docs must work on a machine without internet.
    api = FastAPIOffline(
        title="Dovecote",
        version=app.__version__,
        description="Transfer learning as a service. Authenticate with `Authorization: Bearer "
        "<key>` (**Authorize** above); keys are made with `dovecote keys create --tenant NAME`.",
        generate_unique_id_function=_operation_id,
        swagger_ui_parameters={"persistAuthorization": True, "displayRequestDuration": True},
        lifespan=lifespan,
    )
    api.state.settings = settings
    api.state.enqueue = enqueue
    api.state.warm = warm
    api.state.worker_ready = worker_ready
    api.state.rate_buckets = (
        TokenBuckets(settings.tenant_rate_limit, settings.tenant_rate_burst)
        if settings.tenant_rate_limit > 0
        else None
    )
    slots = settings.tenant_max_concurrent_predicts
    # One count per process for both doors: the API's predicts and the console's quick test.
    api.state.predict_slots = InFlight(slots) if slots else None
    problems.install(api)
    problems.document_errors(api)
    for router in (
        meta.router, projects.router, images.router, jobs.router, models.router, usage.router,
        aliases.router, predictions.router, webhooks.router, batch_predictions.router,
    ):  # fmt: skip
        api.include_router(router)
    console.install(api)  # the web console at /console, on the same services
    # Outermost last: the key is checked (and a predict's slot taken) first, then the body
    # size, then its content.
    api.add_middleware(InputGuard)
    api.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    api.add_middleware(EarlyAuth, settings=settings, predict_slots=api.state.predict_slots)
    return api
