"""`gatewatch decide`: the decision endpoint over HTTP/1.1, small enough for a gateway's hot path.

Not FastAPI: every request of the gateway comes through here, so the whole answer is a parse
(httptools, llhttp), two cached table reads (api/decision.py) and one write of a fixed-shape response —
about 0.1 ms of CPU. Keep-alive connections (nginx `keepalive` upstream) are the normal case.

    GET|HEAD|POST... /v1/decision   the decision: 204 allow, 401 step up, 403 deny, X-Gatewatch-* headers
    GET /healthz                    liveness: 200 {"status": "ok"}
    anything else                   404 {"error": {"code": "not_found", ...}}

Read from the gateway's subrequest: `Authorization` (the client's), `X-Forwarded-For` (believed only from
`[decision] trusted_proxies`), `X-Gatewatch-Tenant` and `X-Gatewatch-Route` (which route was called).
A request head over 16 KiB, a request body, or a connection silent for `header_timeout_seconds` is
closed; at `max_connections` open, a new one gets 503 at once.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import json
import logging
import signal
import time
from collections import Counter
from typing import Any

import httptools

from api.decision import Decision, DecisionEngine, DecisionRequest, client_address

log = logging.getLogger("gatewatch.decide")

MAX_HEAD_BYTES = 16 * 1024 + 1024  # a 16 KiB token plus ordinary headers
_WANTED = {b"authorization": "authorization", b"x-forwarded-for": "xff", b"x-gatewatch-tenant": "tenant",
           b"x-gatewatch-route": "route"}
_REASON_MAX = 200
_CLIENT_CACHE_MAX = 65_536
# Every this many seconds, what has survived the young collections is frozen out of the collector's sight
# (gc.freeze): the look-up caches grow to 100,000s of objects, and a full collection over them stalled every
# request for up to 128 ms (a 300,000-decision run on a 100,000-token store; 27 ms with this). Nothing cached
# holds a reference cycle, and a connection breaks its own when it closes, so nothing frozen is garbage
# that only the collector could free.
_FREEZE_SECONDS = 10.0
_MISSING = object()


def _ascii(text: str) -> str:
    """A header-safe one-line reason: printable ASCII only, bounded."""
    out = "".join(c if 32 <= ord(c) < 127 else "?" for c in text.replace("…", "..."))
    return out[:_REASON_MAX]


def render(decision: Decision, *, reason_header: bool, keep_alive: bool) -> bytes:
    head = [f"HTTP/1.1 {decision.status} {_PHRASE[decision.status]}",
            f"X-Gatewatch-Action: {decision.action}",
            f"X-Gatewatch-Risk: {decision.risk:.0f}"]
    if reason_header and decision.reason:
        head.append(f"X-Gatewatch-Reason: {_ascii(decision.reason)}")
    if decision.status == 401:  # RFC 9470 step-up: the client must come back with a stronger authentication
        head.append('WWW-Authenticate: Bearer error="insufficient_user_authentication", '
                    'error_description="gatewatch asks for a fresh authentication"')
    head.append("Content-Length: 0")
    head.append("Cache-Control: no-store")
    if not keep_alive:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii")


_PHRASE = {200: "OK", 204: "No Content", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           413: "Payload Too Large", 431: "Request Header Fields Too Large", 400: "Bad Request",
           503: "Service Unavailable"}


def _json_response(status: int, body: dict[str, Any], *, close: bool) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    head = (f"HTTP/1.1 {status} {_PHRASE[status]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nCache-Control: no-store\r\n")
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + data


def _error(status: int, code: str, message: str) -> bytes:
    return _json_response(status, {"error": {"code": code, "message": message}}, close=True)


class DecisionServer:
    """The listening side: one asyncio server; `counts` are the decisions made, by action."""

    def __init__(self, engine: DecisionEngine, *, trusted_proxies: list[str], reason_header: bool = True,
                 header_timeout_seconds: float = 5.0, max_connections: int = 1000) -> None:
        self.engine = engine
        self.trusted = [ipaddress.ip_network(c, strict=False) for c in trusted_proxies]
        self.reason_header = reason_header
        self.header_timeout_seconds = header_timeout_seconds
        self.max_connections = max_connections
        self.open_connections = 0
        self.counts: Counter[str] = Counter()
        # (peer, X-Forwarded-For) -> client address: parsing addresses was the largest share of a decision's CPU
        self._clients: dict[tuple[str | None, str | None], str | None] = {}
        self.connections: set[_Connection] = set()
        self.loop_time = time.monotonic  # replaced by the running loop's clock in `serve`

    def sweep(self) -> None:
        """Close connections that have not completed a request head within the header timeout of connecting or
        of their previous answer. Once a second, not a timer per request: re-arming one per request cost more
        CPU than the decision."""
        horizon = self.loop_time() - self.header_timeout_seconds
        for conn in [c for c in self.connections if c.last_active < horizon]:
            if conn.transport is not None:
                conn.transport.close()

    def client_of(self, peer: str | None, forwarded_for: str | None) -> str | None:
        key = (peer, forwarded_for)
        found = self._clients.get(key, _MISSING)
        if found is _MISSING:
            if len(self._clients) >= _CLIENT_CACHE_MAX:
                self._clients.clear()
            found = self._clients[key] = client_address(peer, forwarded_for, self.trusted)
        return found  # type: ignore[return-value]

    def protocol(self) -> _Connection:
        return _Connection(self)

    def run(self, host: str, port: int) -> None:
        """Serve until SIGINT/SIGTERM, on uvloop (libuv's event loop: less CPU per request than asyncio's)."""
        import uvloop

        uvloop.run(self.serve(host, port, freeze=True))

    async def serve(self, host: str, port: int, *, ready: asyncio.Event | None = None,
                    stop: asyncio.Event | None = None, freeze: bool = False) -> None:
        """`freeze`: keep long-lived objects out of the cyclic collector (`_FREEZE_SECONDS`) — for the process that
        is the server, not for one that hosts it among other things (a test run)."""
        loop = asyncio.get_running_loop()
        self.loop_time = loop.time
        server = await loop.create_server(self.protocol, host, port, reuse_address=True, backlog=1024)
        if ready is not None:
            ready.set()
        stop = stop or asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (RuntimeError, ValueError):  # not the main thread (tests): the caller sets `stop`
                pass
        frozen_at = loop.time()
        if freeze:
            gc.collect()
            gc.freeze()  # what start-up made
        async with server:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), timeout=min(1.0, self.header_timeout_seconds / 2))
                except asyncio.TimeoutError:
                    self.sweep()
                    if freeze and loop.time() - frozen_at >= _FREEZE_SECONDS:
                        gc.collect(1)
                        gc.freeze()
                        frozen_at = loop.time()


class _Connection(asyncio.Protocol):
    def __init__(self, server: DecisionServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer: str | None = None
        self.head_bytes = 0
        self.headers: dict[str, str] = {}
        self.url = b""
        self.body = False
        self.counted = False
        self.last_active = 0.0  # loop time of the last byte read or answer written (the sweep closes idle ones)

    # -- connection -----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        srv = self.server
        if srv.open_connections >= srv.max_connections:
            transport.write(_error(503, "unavailable", "too many connections"))
            transport.close()
            return
        srv.open_connections += 1
        srv.connections.add(self)
        self.counted = True
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        self.last_active = srv.loop_time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.parser = None  # type: ignore[assignment]  # the parser calls back into us: break the cycle
        self.transport = None
        if self.counted:
            self.server.open_connections -= 1
            self.server.connections.discard(self)
            self.counted = False

    def data_received(self, data: bytes) -> None:
        if not self.head_bytes:  # the first bytes of a request head start its clock
            self.last_active = self.server.loop_time()
        self.head_bytes += len(data)
        if self.head_bytes > MAX_HEAD_BYTES:
            self._fail(431, "bad_request", "request head too large")
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "bad_request", "upgrades are not served")
        except httptools.HttpParserError:
            self._fail(400, "bad_request", "malformed HTTP request")

    def _fail(self, status: int, code: str, message: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_error(status, code, message))
            self.transport.close()

    # -- httptools callbacks ----------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.headers = {}
        self.url = b""
        self.body = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = _WANTED.get(name.lower())
        if key is not None:
            text = value.decode("latin-1")
            if key == "xff" and key in self.headers:  # repeated: one list (RFC 9110 §5.3)
                self.headers[key] += f", {text}"
            else:  # another header repeated: the first one counts
                self.headers.setdefault(key, text)

    def on_body(self, body: bytes) -> None:
        self.body = True

    def on_message_complete(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.body:
            self._fail(413, "payload_too_large", "the decision endpoint takes no body")
            return
        keep = self.parser.should_keep_alive()
        path = self.url.partition(b"?")[0]
        if path == b"/v1/decision":
            transport.write(self._decide(keep))
        elif path == b"/healthz":
            transport.write(_json_response(200, {"status": "ok"}, close=not keep))
        else:
            transport.write(_json_response(404, {"error": {"code": "not_found", "message": "no such path"}},
                                           close=not keep))
        if keep:
            self.head_bytes = 0
            self.last_active = self.server.loop_time()
        else:
            transport.close()

    def _decide(self, keep: bool) -> bytes:
        srv = self.server
        h = self.headers
        req = DecisionRequest(authorization=h.get("authorization"),
                              client_ip=srv.client_of(self.peer, h.get("xff")),
                              tenant=h.get("tenant") or None, route=h.get("route") or None)
        decision = srv.engine.decide(req, time.time())
        srv.counts[decision.action] += 1
        return render(decision, reason_header=srv.reason_header, keep_alive=keep)
