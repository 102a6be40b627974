"""Health, readiness and the catalogue of methods and backbones."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.deps import SessionDep, TenantDep
from app.api.schemas import BackboneOut, MethodOut
from app.errors import BackboneUnavailable
from app.transfer.backbones import list_backbones, resolve_weights
from app.transfer.methods import list_methods

router = APIRouter()


@router.get("/healthz", tags=["health"])
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"])
def readyz(db: SessionDep) -> JSONResponse:
    """The database answers and is migrated."""
    try:
        db.execute(text("SELECT 1 FROM alembic_version"))
    except Exception as exc:
        return JSONResponse({"status": "unavailable", "detail": str(exc)[:200]}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/v1/methods", tags=["catalogue"])
def methods(_: TenantDep) -> list[MethodOut]:
    return [
        MethodOut(name=m.name, summary=m.summary, params_schema=m.Params.model_json_schema())
        for m in list_methods()
    ]


@router.get("/v1/backbones", tags=["catalogue"])
def backbones(_: TenantDep) -> list[BackboneOut]:
    out = []
    for spec in list_backbones():
        try:
            source: str | None = resolve_weights(spec.name).kind
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
    return out
