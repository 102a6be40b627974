"""Tenants and API keys. Keys are random; only their SHA-256 is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.base import utcnow
from app.db.models import ApiKey, Tenant
from app.errors import NotFound, Unauthorized

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


def list_keys(*, db: Session, tenant_name: str | None = None) -> list[ApiKey]:
    """Every key (or one tenant's), oldest first; revoked keys included."""
    stmt = select(ApiKey).join(Tenant).order_by(ApiKey.created_at, ApiKey.id)
    if tenant_name is not None:
        stmt = stmt.where(Tenant.name == tenant_name)
    return list(db.scalars(stmt))


def revoke_key(*, db: Session, key: str) -> ApiKey:
    """Revoke a key given by its id (``key_...``), its printed prefix, or the key itself;
    it answers 401 from the next request on (authentication reads the row every time)."""
    matches = list(
        db.scalars(
            select(ApiKey).where(
                or_(ApiKey.id == key, ApiKey.prefix == key, ApiKey.key_hash == hash_key(key))
            )
        )
    )
    if len(matches) != 1:
        raise NotFound(
            f"{'No' if not matches else 'More than one'} API key matches {key!r}; "
            "give its id from `dovecote keys list`.",
            resource="api_key",
        )
    row = matches[0]
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        db.commit()
    return row


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
    # One statement (not the key, then its tenant lazily): the one the prewarm compiles.
    tenant = db.scalar(
        select(Tenant)
        .join(ApiKey)
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    )
    if tenant is None:
        raise Unauthorized(f"The API key is not valid (or was revoked). {_KEYS_HINT}")
    return tenant
