"""Sign in with an API key, sign out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from app.api.deps import SessionDep, SettingsDep, tenant_for_key
from app.console import auth
from app.console.templating import render
from app.errors import Unauthorized

router = APIRouter()


@router.get("/sign-in")
def sign_in_page(request: Request, next: str | None = None) -> Response:
    return render(request, "sign_in.html", {"next": auth.safe_next(next)})


@router.post("/sign-in")
def sign_in(
    request: Request,
    db: SessionDep,
    settings: SettingsDep,
    key: Annotated[str, Form(max_length=500)],
    next: Annotated[str | None, Form()] = None,
) -> Response:
    try:
        tenant_for_key(request, db, settings, key.strip())
    except Unauthorized as exc:
        context = {"next": auth.safe_next(next), "error": exc.detail}
        return render(request, "sign_in.html", context, status_code=401)
    response = RedirectResponse(auth.safe_next(next), status_code=303)
    auth.start_session(request, response, key.strip())
    return response


@router.post("/sign-out")
def sign_out() -> Response:
    response = RedirectResponse(auth.sign_in_url(), status_code=303)
    auth.end_session(response)
    return response
