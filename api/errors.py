"""HTTP errors of the API: every failure a client sees is `{"error": {"code", "message"}}` (CONTRACT.md §6).

    ApiError                  status + stable `code`; raised by routes and dependencies
    ├── BadRequest            400 bad_request / bad_filter / bad_cursor
    ├── Unauthorized          401 unauthorized (with `WWW-Authenticate: Bearer`)
    ├── Forbidden             403 forbidden
    ├── NotFound              404 not_found
    └── PayloadTooLarge       413 payload_too_large

`install_error_handlers(app)` maps these, FastAPI's request validation errors (422 `validation_error`
for bodies; 400 `bad_request` for query/path/header parameters), Starlette's HTTP exceptions (404 for
unknown paths, 405 with an `Allow` naming HEAD beside GET, ...) and anything unexpected (500 `internal`)
onto that one shape. No stack trace, exception text or echoed input ever reaches a client; unexpected
errors are logged server-side.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

# Codes for the statuses Starlette/FastAPI raise on their own.
_STATUS_CODES: dict[int, str] = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "payload_too_large",
    415: "unsupported_media_type", 422: "validation_error", 429: "too_many_requests",
}
_PARAM_LOCATIONS = frozenset({"query", "path", "header", "cookie"})


class ApiError(Exception):
    """An error with an HTTP status and a stable machine-readable code."""

    status_code = 500
    code = "internal"

    def __init__(self, message: str, *, code: str | None = None, status_code: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.headers = headers


class BadRequest(ApiError):
    status_code = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str = "missing or invalid credential") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    status_code = 403
    code = "forbidden"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "payload_too_large"


class ServiceUnavailable(ApiError):
    status_code = 503
    code = "unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "2"})


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(status_code: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status_code, headers=headers)


def _describe_validation(exc: RequestValidationError) -> tuple[bool, str]:
    """(only parameters were wrong?, message naming the fields) — never echoes the input."""
    errors = exc.errors()
    locs = [[str(p) for p in err.get("loc", ())] for err in errors]
    params_only = all(loc and loc[0] in _PARAM_LOCATIONS for loc in locs)
    parts = [f"{'.'.join(loc) or 'request'}: {err.get('msg', 'invalid')}" for loc, err in zip(locs, errors, strict=True)]
    return params_only, "; ".join(parts[:5]) or "invalid request"


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.code, exc.message, exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    params_only, message = _describe_validation(exc)
    if params_only:
        return error_response(400, "bad_request", message)
    return error_response(422, "validation_error", message)


_HTTP_METHODS = ("get", "head", "post", "put", "patch", "delete")


def _documented_methods(request: Request) -> str | None:
    """The methods the OpenAPI document gives the requested path (the most specific template wins:
    `/v1/alerts/counts` is not `/v1/alerts/{alert_id}`). Starlette's 405 names only the first route's."""
    best: tuple[int, list[str]] | None = None
    for template, item in request.app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            rank = template.count("{")
            if best is None or rank < best[0]:
                methods = [m.upper() for m in _HTTP_METHODS if m in item]
                if "GET" in methods and "HEAD" not in methods:
                    methods.insert(methods.index("GET") + 1, "HEAD")  # every GET answers HEAD (api/head.py)
                best = (rank, methods)
    return ", ".join(best[1]) if best and best[1] else None


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = _STATUS_CODES.get(status, "internal" if status >= 500 else "error")
    # Framework details are short fixed strings ("Not Found", "Method Not Allowed"); keep them,
    # but never for 5xx.
    message = str(exc.detail) if status < 500 and isinstance(exc.detail, str) else "internal error"
    headers = getattr(exc, "headers", None)
    if status == 405:
        allowed = _documented_methods(request)
        if allowed:
            headers = {**(headers or {}), "Allow": allowed}
    return error_response(status, code, message, headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path,
              exc_info=exc)
    return error_response(500, "internal", "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


class RepeatedQueryMiddleware:
    """Refuses a query string naming a parameter twice (`?ip=a&ip=b`) with 400: the API would read one
    value and a proxy in front might read the other — on the gateway's hot path, an ambiguity to refuse."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("query_string"):
            names = [name for name, _ in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)]
            if len(names) != len(set(names)):
                response = error_response(400, "bad_request", "a query parameter is given more than once")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class ErrorBody(BaseModel):
    """Every error: `{"error": {"code", "message"}}` (CONTRACT.md §6)."""

    class Detail(BaseModel):
        code: str
        message: str

    error: Detail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status documented with the error body it really has."""
    return {status: {"model": ErrorBody, "description": _DESCRIPTIONS.get(status, "error")} for status in statuses}


_DESCRIPTIONS = {400: "bad filter value, cursor or query", 401: "missing or invalid credential",
                 403: "credential lacks the scope", 404: "not found (or not in your tenants)",
                 413: "request body too large", 422: "invalid body",
                 503: "triage could not be recorded or applied in time (a replica following Kafka)"}


class BodyLimitMiddleware:
    """Refuses request bodies over `max_body_bytes` with 413, whether announced or streamed.

    The body is read (bounded) before the app sees the request and replayed to it.
    """

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    announced = int(value)
                except ValueError:
                    await self._refuse(scope, receive, send, 400, "bad_request", "bad Content-Length")
                    return
                if announced > limit:
                    await self._refuse(scope, receive, send, 413, "payload_too_large",
                                       f"request body over {limit} bytes")
                    return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                await self.app(scope, _replay([message], receive), send)
                return
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await self._refuse(scope, receive, send, 413, "payload_too_large",
                                   f"request body over {limit} bytes")
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([replayed], receive), send)

    @staticmethod
    async def _refuse(scope: Any, receive: Any, send: Any, status: int, code: str, message: str) -> None:
        await error_response(status, code, message, {"Connection": "close"})(scope, receive, send)


def _replay(messages: list[dict[str, Any]], receive: Any) -> Any:
    pending = list(messages)

    async def replay() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
