"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline

import app
from app.api import problems
from app.api.guards import EarlyAuth, InputGuard
from app.api.limits import BodySizeLimit
from app.api.ratelimit import TokenBuckets
from app.api.routes import aliases, images, jobs, meta, models, predictions, projects, usage
from app.config import Settings, get_settings
from app.services import backbones as learned_backbones


def _operation_id(route: APIRoute) -> str:
    """Stable OpenAPI operation ids (the function name), so generated clients keep names."""
    return route.name


def create_app(
    settings: Settings | None = None, *, enqueue: Callable[[str], None] | None = None
) -> FastAPI:
    """Build the API. ``enqueue`` replaces the Celery sender (used by in-process tests)."""
    settings = settings or get_settings()
    learned_backbones.install(settings)
    # Swagger UI and ReDoc served from the package's own copies of their assets, never a CDN:
    # the docs must work on a machine without internet.
    api = FastAPIOffline(
        title="Dovecote",
        version=app.__version__,
        description="Transfer learning as a service. Authenticate with `Authorization: Bearer "
        "<key>` (**Authorize** above); keys are made with `dovecote keys create --tenant NAME`.",
        generate_unique_id_function=_operation_id,
        swagger_ui_parameters={"persistAuthorization": True, "displayRequestDuration": True},
    )
    api.state.settings = settings
    api.state.enqueue = enqueue
    api.state.rate_buckets = (
        TokenBuckets(settings.tenant_rate_limit, settings.tenant_rate_burst)
        if settings.tenant_rate_limit > 0
        else None
    )
    problems.install(api)
    problems.document_errors(api)
    for router in (
        meta.router, projects.router, images.router, jobs.router, models.router, usage.router,
        aliases.router, predictions.router,
    ):  # fmt: skip
        api.include_router(router)
    # Outermost last: the key is checked first, then the body size, then its content.
    api.add_middleware(InputGuard)
    api.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    api.add_middleware(EarlyAuth, settings=settings)
    return api
