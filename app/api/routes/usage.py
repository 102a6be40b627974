"""A tenant's quotas and what it uses of them."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import SessionDep, SettingsDep, TenantDep
from app.api.schemas import QuotaOut, RateLimitOut, UsageOut
from app.services import quotas

router = APIRouter(tags=["usage"])


@router.get("/v1/usage")
def get_usage(tenant: TenantDep, db: SessionDep, settings: SettingsDep) -> UsageOut:
    used = quotas.usage(db=db, tenant_id=tenant.id)
    per_quota = {
        name: QuotaOut(used=getattr(used, name), limit=limit or None)
        for name, limit in quotas.limits(settings).items()
    }
    rate = (
        RateLimitOut(per_second=settings.tenant_rate_limit, burst=settings.tenant_rate_burst)
        if settings.tenant_rate_limit > 0
        else None
    )
    return UsageOut(tenant=tenant.name, rate_limit=rate, **per_quota)
