"""Console sessions: an API key in an HttpOnly cookie, and CSRF tokens for every POST.

- ``dovecote_key``: the API key the person signed in with (HttpOnly, SameSite=Strict,
  path ``/console``; Secure over HTTPS). Every request looks its tenant up again through
  :func:`app.api.deps.tenant_for_key`, the API's own lookup, so a revoked key signs the
  console out at its next click.
- ``dovecote_csrf``: a random per-session nonce (same flags), renewed at sign-in.
  Every form carries the token ``HMAC-SHA256(nonce, sha256(key) or "anonymous")``; a POST
  whose token (form field ``csrf_token`` or header ``X-CSRF-Token``) does not match is
  refused with 403. A cross-site page can neither read the nonce nor make the browser send
  it (SameSite=Strict), so it cannot forge the token; the nonce also covers sign-in itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from starlette.responses import Response

from app.api.deps import SessionDep, SettingsDep, tenant_for_key
from app.db.models import Tenant
from app.errors import Unauthorized
from app.services import tenants as tenants_service

KEY_COOKIE = "dovecote_key"
NONCE_COOKIE = "dovecote_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
COOKIE_PATH = "/console"
_UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class SignInRequired(Exception):
    """No valid key in the cookie: the console answers with a redirect to sign-in."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


class CsrfRejected(Exception):
    """A POST without the session's CSRF token (403)."""


def sign_in_url(next_url: str | None = None) -> str:
    url = f"{COOKIE_PATH}/sign-in"
    return f"{url}?next={quote(next_url, safe='/')}" if next_url else url


def safe_next(next_url: str | None) -> str:
    """Only a console path: never an absolute URL (no open redirect)."""
    if next_url and next_url.startswith(f"{COOKIE_PATH}/") and not next_url.startswith("//"):
        return next_url
    return f"{COOKIE_PATH}/"


def nonce(request: Request) -> str:
    """The session's CSRF nonce: the cookie's, else one minted for this response (set on it
    by :func:`keep_nonce`)."""
    existing = request.cookies.get(NONCE_COOKIE)
    if existing:
        return existing
    minted: str | None = getattr(request.state, "new_nonce", None)
    if minted is None:
        minted = request.state.new_nonce = secrets.token_urlsafe(32)
    return minted


def csrf_token(request: Request, key: str | None = None) -> str:
    """The token forms on this page carry (``key``: the one being signed in with)."""
    key = key if key is not None else request.cookies.get(KEY_COOKIE)
    subject = tenants_service.hash_key(key) if key else "anonymous"
    return hmac.new(nonce(request).encode(), subject.encode(), hashlib.sha256).hexdigest()


def _set(request: Request, response: Response, name: str, value: str) -> None:
    response.set_cookie(
        name, value, path=COOKIE_PATH, httponly=True, samesite="strict",
        secure=request.url.scheme == "https",
    )  # fmt: skip


def keep_nonce(request: Request, response: Response) -> None:
    """Set the nonce minted while rendering this response, if one was."""
    minted = getattr(request.state, "new_nonce", None)
    if minted and not request.cookies.get(NONCE_COOKIE):
        _set(request, response, NONCE_COOKIE, minted)


def start_session(request: Request, response: Response, key: str) -> None:
    """Keep the key, and a fresh nonce (tokens of the signed-out page stop working)."""
    _set(request, response, KEY_COOKIE, key)
    _set(request, response, NONCE_COOKIE, secrets.token_urlsafe(32))


def end_session(response: Response) -> None:
    for name in (KEY_COOKIE, NONCE_COOKIE):
        response.delete_cookie(name, path=COOKIE_PATH, httponly=True, samesite="strict")


async def check_csrf(request: Request) -> None:
    """Every unsafe request of the console carries the session's token (a router-wide
    dependency, so a new route cannot forget it)."""
    if request.method not in _UNSAFE_METHODS:
        return
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        field = form.get(CSRF_FIELD)
        sent = field if isinstance(field, str) else None
    if not request.cookies.get(NONCE_COOKIE) or not sent:
        raise CsrfRejected("The form has no CSRF token (or the session cookie is missing).")
    if not hmac.compare_digest(sent.encode(), csrf_token(request).encode()):
        raise CsrfRejected("The form's CSRF token does not match this session; reload the page.")


def console_tenant(request: Request, db: SessionDep, settings: SettingsDep) -> Tenant:
    """The signed-in tenant; without a valid key, a redirect to sign-in (then back here)."""
    key = request.cookies.get(KEY_COOKIE)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if not key:
        raise SignInRequired(here if request.method == "GET" else f"{COOKIE_PATH}/")
    try:
        return tenant_for_key(request, db, settings, key)
    except Unauthorized:
        raise SignInRequired(here if request.method == "GET" else f"{COOKIE_PATH}/") from None


ConsoleTenant = Annotated[Tenant, Depends(console_tenant)]
