"""HEAD on any path answers as GET would, without the body (RFC 9110 §9.3.2).

FastAPI's GET routes do not accept HEAD (only plain Starlette routes and the static files do), so
monitors and proxies that probe with HEAD got 405. The request goes to the app as a GET: same routing,
credentials, status and headers (Content-Length included); the body is dropped here rather than left to
the server, which the test client and other ASGI servers would not do.
"""

from __future__ import annotations

from typing import Any


class HeadAsGetMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        answered = False

        async def send_headers_only(message: Any) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                await send(message)
            elif not answered:  # the first body message ends the response, empty
                answered = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def receive_until_answered() -> Any:
            # Once the response is complete the client has all it asked for: an endless body (the alert
            # stream) sees a disconnect and stops instead of producing into the void.
            if answered:
                return {"type": "http.disconnect"}
            return await receive()

        await self.app({**scope, "method": "GET"}, receive_until_answered, send_headers_only)
