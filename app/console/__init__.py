"""The web console at ``/console``: server-rendered pages (Jinja2) with a little
dependency-free JavaScript, on the same services as the API (no second source of truth,
no HTTP calls to itself).

Add a page group as one module in :mod:`app.console.routes` with its own ``router`` and
list it in :data:`ROUTERS`; its templates extend ``base.html``. Every route gets the CSRF
check (router-wide); a route that needs the signed-in tenant takes
:data:`app.console.deps.ConsoleTenant` (or ``ConsoleProject``).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response

from app.console import auth
from app.console.routes import (
    images,
    jobs,
    label_next,
    models,
    projects,
    quick_test,
    session,
    versions,
)
from app.console.templating import HERE, render
from app.errors import DovecoteError

PREFIX = auth.COOKIE_PATH
ROUTERS: list[APIRouter] = [
    session.router,
    projects.router,
    images.router,
    jobs.router,
    models.router,
    versions.router,
    quick_test.router,
    label_next.router,
]


def _router() -> APIRouter:
    router = APIRouter(
        prefix=PREFIX, include_in_schema=False, dependencies=[Depends(auth.check_csrf)]
    )
    for module_router in ROUTERS:
        router.include_router(module_router)
    return router


def _is_console(request: Request) -> bool:
    path = request.url.path
    return path == PREFIX or path.startswith(f"{PREFIX}/")


def error_page(request: Request, status: int, title: str, detail: str) -> Response:
    return render(
        request, "error.html", {"title": title, "detail": detail, "status": status}, status
    )


def install(app: FastAPI) -> None:
    """Mount the console on ``app``: its routes, its static files, and HTML error pages for
    its paths (the API's paths keep their problem+json answers)."""
    app.include_router(_router())
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static")

    @app.exception_handler(auth.SignInRequired)
    async def _sign_in(_: Request, exc: auth.SignInRequired) -> Response:
        response = RedirectResponse(auth.sign_in_url(exc.next_url), status_code=303)
        response.delete_cookie(auth.KEY_COOKIE, path=PREFIX)
        return response

    @app.exception_handler(auth.CsrfRejected)
    async def _csrf(request: Request, exc: auth.CsrfRejected) -> Response:
        return error_page(request, 403, "Forbidden", str(exc))

    for kind in (DovecoteError, RequestValidationError, StarletteHTTPException):
        _html_for_console(app, kind)


def _html_for_console(app: FastAPI, kind: type[Exception]) -> None:
    api_handler = app.exception_handlers[kind]

    async def handler(request: Request, exc: Exception) -> Response:
        if not _is_console(request):
            return await api_handler(request, exc)  # type: ignore[no-any-return]
        if isinstance(exc, DovecoteError):
            return error_page(request, exc.status, exc.title, exc.detail)
        if isinstance(exc, StarletteHTTPException):
            return error_page(request, exc.status_code, "Error", str(exc.detail))
        return error_page(request, 422, "Invalid form", "Some fields of the form were invalid.")

    app.add_exception_handler(kind, handler)
