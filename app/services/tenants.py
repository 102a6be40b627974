"""Tenants and API keys. Keys are random; only their SHA-256 is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import ApiKey, Tenant
from app.errors import Unauthorized

DEFAULT_TENANT = "default"
KEY_PREFIX = "dvc_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_tenant(*, db: Session, name: str) -> Tenant:
    tenant = db.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is not None:
        return tenant
    tenant = Tenant(name=name)
    db.add(tenant)
    try:
        db.commit()
    except IntegrityError:  # created concurrently
        db.rollback()
        return db.scalars(select(Tenant).where(Tenant.name == name)).one()
    return tenant


def create_key(*, db: Session, tenant_name: str) -> str:
    """Create an API key for ``tenant_name`` (creating the tenant); returns the key once."""
    tenant = get_or_create_tenant(db=db, name=tenant_name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    db.add(ApiKey(tenant_id=tenant.id, key_hash=hash_key(key), prefix=key[:10]))
    db.commit()
    return key


_KEYS_HINT = (
    "An operator makes keys with `dovecote keys create --tenant NAME` (or sets "
    "DOVECOTE_API_KEY, the admin key)."
)


def authenticate(*, db: Session, key: str | None, admin_key: str | None) -> Tenant:
    """The tenant a Bearer key belongs to; the configured admin key is tenant ``default``."""
    if not key:
        raise Unauthorized(f"Send `Authorization: Bearer <api key>`. {_KEYS_HINT}")
    if admin_key and hmac.compare_digest(key.encode(), admin_key.encode()):
        return get_or_create_tenant(db=db, name=DEFAULT_TENANT)
    row = db.scalar(
        select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    )
    if row is None:
        raise Unauthorized(f"The API key is not valid (or was revoked). {_KEYS_HINT}")
    return row.tenant
