"""The FastAPI application factory."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline

import app
from app import allocator, console
from app.api import problems
from app.api.guards import EarlyAuth, InputGuard
from app.api.limits import BodySizeLimit
from app.api.ratelimit import TokenBuckets
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


def _prewarm(settings: Settings, warm: threading.Event) -> None:
    try:
        predict_service.prewarm(settings=settings)
    except Exception:  # the first predict on it will load it (and say what is wrong)
        log.warning("could not prewarm the default backbone", exc_info=True)
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

    With ``DOVECOTE_PREWARM`` the default backbone is loaded at start, on a thread (so
    ``/healthz`` answers meanwhile); ``/readyz`` says ready once it is done. glibc malloc is
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
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not warm.is_set():
            threading.Thread(
                target=_prewarm, args=(settings, warm), name="prewarm", daemon=True
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
    problems.install(api)
    problems.document_errors(api)
    for router in (
        meta.router, projects.router, images.router, jobs.router, models.router, usage.router,
        aliases.router, predictions.router, webhooks.router, batch_predictions.router,
    ):  # fmt: skip
        api.include_router(router)
    console.install(api)  # the web console at /console, on the same services
    # Outermost last: the key is checked first, then the body size, then its content.
    api.add_middleware(InputGuard)
    api.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    api.add_middleware(EarlyAuth, settings=settings)
    return api
