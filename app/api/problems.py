"""RFC 9457 problem documents: the one place domain errors become HTTP answers."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, params
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.schemas import Problem
from app.errors import PROBLEM_BASE, DovecoteError

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


def problem_response(
    status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:  # fmt: skip
    body = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def error_response(exc: DovecoteError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
    if "retry_after" in exc.extra:
        headers["Retry-After"] = str(exc.extra["retry_after"])
    return JSONResponse(
        exc.problem(), status_code=exc.status, media_type=PROBLEM_JSON, headers=headers
    )


def _json_not_declared(request: Request) -> bool:
    """The route takes a JSON body but the request did not say it sends JSON."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or route.body_field is None:
        return False
    if any(isinstance(p.field_info, params.Form) for p in route.dependant.body_params):
        return False  # multipart / form routes (File is a Form)
    return "json" not in request.headers.get("content-type", "").lower()


#: Problem codes raised outside :class:`DovecoteError` (routing, validation, middleware).
_EXTRA_CODES = {
    401: ["unauthorized"],
    404: ["not_found"],
    413: ["upload_too_large"],
    422: ["validation_error", "invalid_characters"],
}


def _codes_by_status() -> dict[int, list[str]]:
    out: dict[int, set[str]] = {s: set(c) for s, c in _EXTRA_CODES.items()}
    pending: list[type[DovecoteError]] = [DovecoteError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if 400 <= cls.status < 500 and cls.code != "error":
            out.setdefault(cls.status, set()).add(cls.code)
    return {s: sorted(c) for s, c in sorted(out.items())}


def document_errors(app: FastAPI) -> None:
    """Document the problem answers of every operation in the OpenAPI schema.

    Each ``/v1`` operation lists every 4xx status the API answers, each with the shared
    ``Problem`` schema as ``application/problem+json`` and the ``code`` values it can carry
    (FastAPI's own 422 schema, which the API never sends, is replaced)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = (
            Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        )
        errors = {
            str(status): {
                "description": "A problem document; `code` is one of: "
                + ", ".join(f"`{c}`" for c in codes)
                + ".",
                "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            }
            for status, codes in _codes_by_status().items()
        }
        for path, operations in schema["paths"].items():
            wanted = errors if path.startswith("/v1/") else {"401": errors["401"]}
            for operation in operations.values():
                operation["responses"].update(wanted)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


_HTTP_CODES = {
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("upload_too_large", "Upload too large"),
}


def install(app: FastAPI) -> None:
    @app.exception_handler(DovecoteError)
    async def _domain(_: Request, exc: DovecoteError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        detail = f"{len(errors)} invalid field(s)."
        if any(e["loc"][:1] == ["body"] for e in errors) and _json_not_declared(request):
            detail += " The body was not read as JSON: send `Content-Type: application/json`."
        return problem_response(422, "validation_error", "Invalid request", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
        return problem_response(exc.status_code, code, title, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem_response(
            500, "internal_error", "Internal error", "An unexpected error occurred."
        )
