"""Health, readiness and the catalogue of methods and backbones."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text

from app.api.deps import SessionDep, SettingsDep, StoreDep, TenantDep
from app.api.schemas import BackboneOut, MethodOut
from app.errors import BackboneUnavailable, Unauthorized
from app.services import backbones as learned_backbones
from app.services import stats
from app.services.predict import get_predictor
from app.transfer.backbones import list_backbones, resolve_weights
from app.transfer.methods import list_methods

router = APIRouter()


@router.get("/healthz", tags=["health"])
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"])
def readyz(request: Request, db: SessionDep, store: StoreDep) -> JSONResponse:
    """The database answers and is migrated, the blob store answers, the default backbone
    is loaded and a predict's statements and routes are warm (`DOVECOTE_PREWARM`) and,
    under `dovecote serve`, its worker is up."""
    try:
        db.execute(text("SELECT 1 FROM alembic_version"))
        store.ping()
    except Exception as exc:
        return JSONResponse({"status": "unavailable", "detail": str(exc)[:200]}, status_code=503)
    if not request.app.state.warm.is_set():
        detail = "loading the default backbone, warming the predict routes"
        return JSONResponse({"status": "unavailable", "detail": detail}, status_code=503)
    worker_ready = request.app.state.worker_ready
    if worker_ready is not None and not worker_ready():
        detail = "the worker has not connected to the broker yet"
        return JSONResponse({"status": "unavailable", "detail": detail}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/metrics", tags=["health"], response_class=PlainTextResponse)
def metrics(request: Request, db: SessionDep, settings: SettingsDep) -> PlainTextResponse:
    """Prometheus text exposition: jobs by status, totals, stored predictions (answered,
    rejected) and their feedback (counted at most once per `DOVECOTE_METRICS_CACHE_SECONDS`
    per process), predictor cache sizes; service-wide only, no series per tenant, project
    or model. Its counts span all tenants: with `DOVECOTE_METRICS_KEY` set it needs that key as a Bearer token."""
    # Read by hand, not through the `ApiKey` scheme: a tenant's key is not this one.
    sent = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if settings.metrics_key and not hmac.compare_digest(
        sent.encode(), settings.metrics_key.encode()
    ):
        raise Unauthorized("/metrics needs `Authorization: Bearer <DOVECOTE_METRICS_KEY>`.")
    lines = ["# TYPE dovecote_jobs gauge"]
    for status, count in stats.jobs_by_status(db=db).items():
        lines.append(f'dovecote_jobs{{status="{status}"}} {count}')
    for name, count in stats.totals(db=db).items():
        lines += [f"# TYPE dovecote_{name} gauge", f"dovecote_{name} {count}"]
    counts = stats.stored_predictions(db=db, max_age=settings.metrics_cache_seconds)
    lines.append("# TYPE dovecote_stored_predictions gauge")
    for kind in ("answered", "rejected"):
        lines.append(f'dovecote_stored_predictions{{answer="{kind}"}} {counts[kind]}')
    lines.append("# TYPE dovecote_prediction_feedback gauge")
    for kind in ("confirmed", "corrected"):
        lines.append(f'dovecote_prediction_feedback{{feedback="{kind}"}} {counts[kind]}')
    predictor = get_predictor(settings)
    lines += [
        "# TYPE dovecote_predictor_cached gauge",
        f'dovecote_predictor_cached{{kind="backbones"}} {len(predictor.backbones)}',
        f'dovecote_predictor_cached{{kind="models"}} {len(predictor.models)}',
    ]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


@router.get("/v1/methods", tags=["catalogue"])
def methods(_: TenantDep) -> list[MethodOut]:
    return [
        MethodOut(
            name=m.name,
            summary=m.summary,
            example_params=m.example_params,
            params_schema=m.Params.model_json_schema(),
        )
        for m in list_methods()
    ]


@router.get("/v1/backbones", tags=["catalogue"])
def backbones(tenant: TenantDep, settings: SettingsDep, db: SessionDep) -> list[BackboneOut]:
    """The registry's backbones, then those the tenant learned (``pretrain`` models, named
    by model id)."""
    out = []
    for spec in list_backbones():
        try:
            source: str | None = resolve_weights(
                spec.name, weights_dir=settings.weights_dir, allow_hub=settings.allow_hub
            ).kind
        except BackboneUnavailable:
            source = None
        out.append(
            BackboneOut(
                name=spec.name,
                architecture=spec.architecture,
                description=spec.description,
                available=source is not None,
                weights_source=source,
            )
        )
    for model in learned_backbones.list_for_tenant(db=db, tenant_id=tenant.id):
        architecture = model.metrics.get("architecture", "")
        out.append(
            BackboneOut(
                name=model.id,
                architecture=architecture,
                description=learned_backbones.description(architecture, model.metrics),
                available=True,
                weights_source="tenant",
            )
        )
    return out
