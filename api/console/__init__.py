"""The analyst console: static files served at `/` (no build step). `mount(app)` wires them in.

    /            static/index.html
    /console/*   static/: console.css, js/ (ES modules), vendor/ (uPlot from the npm registry)

Every response on those paths (files, 304s, 404s) carries the same strict Content-Security-Policy (same
origin only) and frame protection: any console URL opened directly is a page another origin could
otherwise frame (clickjacking).

Nothing is cached without revalidation (`no-cache`: ETag / Last-Modified make that a cheap 304), so a
new version of a file is picked up on the next load although the file names carry no hashes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.responses import Response

STATIC = Path(__file__).parent / "static"

CSP = ("default-src 'self'; style-src 'self'; img-src 'self' data:; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                    "X-Content-Type-Options": "nosniff"}
_CACHE = {"Cache-Control": "no-cache"}
INDEX_HEADERS = {**_CACHE, **SECURITY_HEADERS}


class ConsoleFiles(StaticFiles):
    """StaticFiles with the console's cache header (`ConsoleHeaders` adds the security headers)."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(_CACHE)
        return response


def is_console_path(path: str) -> bool:
    return path == "/" or path == "/console" or path.startswith("/console/")


class ConsoleHeaders:
    """Sets `SECURITY_HEADERS` on every response at a console path, whoever made it: a 404 for a missing
    file comes from the app's error handler, outside the static mount, and must not be frameable either."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not is_console_path(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mount(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def console_index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=INDEX_HEADERS)

    app.mount("/console", ConsoleFiles(directory=STATIC), name="console")
    app.add_middleware(ConsoleHeaders)
