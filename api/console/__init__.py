"""The analyst console: static files served at `/` (no build step). `mount(app)` wires them in.

    /            static/index.html, with a strict Content-Security-Policy (same origin only)
    /console/*   static/: console.css, js/ (ES modules), vendor/ (uPlot from the npm registry)

Nothing is cached without revalidation (`no-cache`: ETag / Last-Modified make that a cheap 304), so a
new version of a file is picked up on the next load although the file names carry no hashes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

STATIC = Path(__file__).parent / "static"

CSP = ("default-src 'self'; style-src 'self'; img-src 'self' data:; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_COMMON = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
INDEX_HEADERS = {**_COMMON, "Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer",
                 "X-Frame-Options": "DENY"}


class ConsoleFiles(StaticFiles):
    """StaticFiles with the console's cache and sniffing headers."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(_COMMON)
        return response


def mount(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def console_index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=INDEX_HEADERS)

    app.mount("/console", ConsoleFiles(directory=STATIC), name="console")
