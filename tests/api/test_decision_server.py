"""`gatewatch decide`'s HTTP server on a real socket: decisions, keep-alive, limits (api/decision_server.py)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from api.decision import DecisionEngine, tfp_of
from api.decision_server import DecisionServer
from api.store import AlertStore
from scoring.holds import Hold, TokenSeen
from scoring.risk import RiskUpdate

FAR = time.time() + 3600


@pytest.fixture(params=["uvloop", "asyncio"])
def served(request: pytest.FixtureRequest) -> Iterator[tuple[DecisionServer, int]]:
    """The server on a free port in a thread, on uvloop (what `gatewatch decide` runs) and on asyncio's own loop."""
    store = AlertStore(":memory:")
    store.holds.upsert([Hold("acme", "token", tfp_of("bad.tok.en"), "token.revoked", "token j was revoked\x1b[2J",
                             time.time() - 1, FAR)],
                       [TokenSeen(tfp_of("ok.tok.en"), "acme", "alice", "web", None, None, None, time.time())])
    store.upsert_risk([RiskUpdate("subject", "alice", "acme", 55.0, "medium", "step_up", ("alice is odd",), 1.0),
                       RiskUpdate("ip", "203.0.113.66", "acme", 90.0, "high", "deny", ("bad address",), 1.0)])
    server = DecisionServer(DecisionEngine(store), trusted_proxies=["127.0.0.1/32"], header_timeout_seconds=0.5,
                            max_connections=3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import uvloop

    loop = uvloop.new_event_loop() if request.param == "uvloop" else asyncio.new_event_loop()
    ready, stop = asyncio.Event(), None

    def main() -> None:
        nonlocal stop
        asyncio.set_event_loop(loop)
        stop = asyncio.Event()
        loop.run_until_complete(server.serve("127.0.0.1", port, ready=ready, stop=stop))

    t = threading.Thread(target=main, daemon=True)
    t.start()
    deadline = time.monotonic() + 5
    while not ready.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    yield server, port
    loop.call_soon_threadsafe(stop.set)
    t.join(5)


def _exchange(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _get(headers: dict[str, str], path: str = "/v1/decision") -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: gatewatch"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _status(resp: bytes) -> int:
    return int(resp.split(b" ", 2)[1])


def _header(resp: bytes, name: str) -> str | None:
    for line in resp.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.decode().lower() == name.lower():
            return v.decode().strip()
    return None


def test_decisions_over_one_keep_alive_connection(served) -> None:
    server, port = served
    with socket.create_connection(("127.0.0.1", port)) as s:
        allow = _exchange(s, _get({"Authorization": "Bearer other.tok.en", "X-Gatewatch-Tenant": "acme"}))
        assert _status(allow) == 204 and _header(allow, "X-Gatewatch-Action") == "allow"
        assert _header(allow, "X-Gatewatch-Risk") == "0" and _header(allow, "X-Gatewatch-Reason") is None
        deny = _exchange(s, _get({"Authorization": "Bearer bad.tok.en", "X-Gatewatch-Tenant": "acme"}))
        assert _status(deny) == 403 and _header(deny, "X-Gatewatch-Action") == "deny"
        assert _header(deny, "X-Gatewatch-Reason") == "token j was revoked?[2J"  # no control characters
        step = _exchange(s, _get({"Authorization": "Bearer ok.tok.en", "X-Gatewatch-Tenant": "acme"}))
        assert _status(step) == 401 and _header(step, "X-Gatewatch-Risk") == "55"
        assert 'error="insufficient_user_authentication"' in _header(step, "WWW-Authenticate")
        # the address comes from X-Forwarded-For because the peer (127.0.0.1) is a trusted proxy
        by_ip = _exchange(s, _get({"X-Forwarded-For": "203.0.113.66", "X-Gatewatch-Tenant": "acme"}))
        assert _status(by_ip) == 403 and _header(by_ip, "X-Gatewatch-Reason") == "bad address"
        health = _exchange(s, _get({}, "/healthz"))
        assert _status(health) == 200 and health.endswith(b'{"status":"ok"}')
        missing = _exchange(s, _get({}, "/v1/other"))
        assert _status(missing) == 404 and b'"code":"not_found"' in missing
    assert server.counts == {"allow": 1, "deny": 2, "step_up": 1}


def test_http_1_0_without_keep_alive_is_closed_after_the_answer(served) -> None:
    _, port = served
    with socket.create_connection(("127.0.0.1", port)) as s:
        resp = _exchange(s, b"GET /v1/decision HTTP/1.0\r\nAuthorization: Bearer bad.tok.en\r\n\r\n")
        assert _status(resp) == 403 and _header(resp, "Connection") == "close"
        assert s.recv(10) == b""


@pytest.mark.parametrize("request_bytes,status", [
    (b"GET /v1/decision HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
    (b"POST /v1/decision HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 413),
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
])
def test_bad_requests_get_the_json_error_and_are_closed(served, request_bytes, status) -> None:
    _, port = served
    with socket.create_connection(("127.0.0.1", port)) as s:
        resp = _exchange(s, request_bytes)
        assert _status(resp) == status and b'{"error":{"code":' in resp
        assert s.recv(10) == b""


def test_a_silent_connection_is_closed_after_the_header_timeout(served) -> None:
    _, port = served
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /v1/decision HTTP/1.1\r\n")  # and never the rest
        s.settimeout(3)
        t0 = time.monotonic()
        assert s.recv(10) == b""
        assert time.monotonic() - t0 < 2.5


def test_over_the_connection_cap_a_new_connection_gets_503(served) -> None:
    server, port = served
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        deadline = time.monotonic() + 2
        while server.open_connections < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(2)
            resp = s.recv(4096)
            assert _status(resp) == 503 and b'"code":"unavailable"' in resp
    finally:
        for s in held:
            s.close()
