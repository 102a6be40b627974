"""Jinja2 templates of the console, and the one way a console route answers with a page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import RedirectResponse, Response

from app.console import auth

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")  # autoescaped
templates.env.globals["CSRF_FIELD"] = auth.CSRF_FIELD


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min" if hours else f"{m} min {s:02d} s" if m else f"{s} s"


templates.env.filters["percent"] = _percent
templates.env.filters["duration"] = _duration


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> Response:
    """Render ``name`` with the page's CSRF token (``csrf``) and the signed-in ``tenant``
    (where the route has one in ``context``); sets the session's nonce cookie if new."""
    ctx = {"csrf": auth.csrf_token(request), **(context or {})}
    response = templates.TemplateResponse(request, name, ctx, status_code=status_code)
    auth.keep_nonce(request, response)
    return response


def redirect_back(back: str | None, default: str) -> RedirectResponse:
    """After a form: back to the console page ``back`` names (never elsewhere), else
    ``default``."""
    return RedirectResponse(auth.safe_next(back) if back else default, status_code=303)
