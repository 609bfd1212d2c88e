"""The real nginx (Debian's package) in front of a small upstream, asking a decision-endpoint test double via
`auth_request`, logging through `gatewatch collect` into the real broker (issue 15, item 3, the nginx half).

What is shown: the rendered config works in a real nginx run unprivileged from a prefix; the decision gets
exactly the headers documented (and no others of the client's), its answers reach the client with the
X-Gatewatch-* headers (401 with WWW-Authenticate); events arrive in Kafka in CONTRACT.md §1's shape and decode
with gatewatch's strict decoder, the token as presented; no file under nginx's prefix (logs included) nor the
collector's log holds a raw token; the fail modes (decision stopped, hanging, erroring); trusted proxies; bad
datagrams become dead letters and the collector goes on.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest.decode import EventDecoder
from ingest.events import AccessRecord
from tests.integration.kafka_helpers import read_all
from tests.nginx_helpers import (CollectorProcess, DecisionDouble, Nginx, Upstream, files_containing, free_port,
                                 private_dir, render_config)

RFC3339_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def token(label: str) -> str:
    """A compact-JWS-looking token, unique to this run (so finding it anywhere means it leaked from here)."""
    def b64(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{b64({'alg': 'ES256', 'typ': 'at+jwt'})}.{b64({'sub': label, 'jti': uuid.uuid4().hex})}.{uuid.uuid4().hex}"


def request(port: int, method: str, path: str, *, bearer: str | None = None, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h = dict(headers or {})
    if bearer:
        h["Authorization"] = f"Bearer {bearer}"
    started = time.monotonic()
    try:
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, time.monotonic() - started
    finally:
        conn.close()


class Stack:
    def __init__(self, prefix: Path, kafka_env: dict[str, str], transport: str) -> None:
        self.prefix, self.kafka_env = prefix, kafka_env
        self.socket = prefix / "collector.sock"
        self.listen = f"unix:{self.socket}" if transport == "unix" else f"udp:127.0.0.1:{free_port()}"
        self.port = free_port()
        self.upstream = Upstream()
        self.decision = DecisionDouble()
        self.collector = CollectorProcess(self.listen, kafka_env, prefix / "collector.stderr")
        self.nginx = Nginx(prefix / "nginx", self.port)

    def start_nginx(self, **kw: Any) -> None:
        kw.setdefault("routes", [("/api/", "acme", "orders"), ("/llm/", "beta", "chat")])
        self.nginx.start(render_config(upstream=f"127.0.0.1:{self.upstream.port}",
                                       decision=f"127.0.0.1:{self.decision.port}",
                                       collector=self.listen, listen=f"127.0.0.1:{self.port}",
                                       gateway="edge-1", workers="2", **kw))

    def events(self, n: int) -> list[AccessRecord]:
        """The access topic's records, each through gatewatch's strict decoder."""
        decoder = EventDecoder(validator=None, max_event_bytes=65_536)
        msgs = read_all(self.kafka_env["GATEWATCH_KAFKA__BOOTSTRAP_SERVERS"],
                        self.kafka_env["GATEWATCH_KAFKA__ACCESS_TOPIC"], expect_at_least=n, timeout=30)
        out = []
        for m in msgs:
            record = decoder.decode(m.value).record
            assert isinstance(record, AccessRecord)
            out.append(record)
        return out

    def close(self) -> None:
        self.nginx.stop()
        self.collector.kill()
        self.upstream.stop()
        self.decision.stop()


@pytest.fixture()
def stack(request: pytest.FixtureRequest, tmp_path: Path, kafka_env: dict[str, str]) -> Iterator[Stack]:
    """Upstream, decision double and collector running (nginx is started by the test); the collector on a unix
    datagram socket, or on UDP where the test parametrizes `stack` with "udp"."""
    with private_dir(tmp_path) as prefix:
        s = Stack(prefix, kafka_env, getattr(request, "param", "unix"))
        try:
            yield s
        finally:
            s.close()


def test_requests_through_nginx_reach_kafka_as_contract_events_and_decisions_apply(stack: Stack) -> None:
    allowed, denied, stepped, slow, broken = (token("alice"), token("mallory"), token("bob"), token("carol"),
                                              token("dave"))
    stack.decision.verdicts.update({denied: "deny", stepped: "step_up", slow: "hang", broken: "error"})
    stack.start_nginx(fail="open", trusted_proxies=("127.0.0.1/32",))
    port = stack.port

    # An allowed request, through a trusted proxy (127.0.0.1) naming the client, with a secret in the query.
    status, headers, _, _ = request(port, "GET", "/api/orders/7?access_token=QUERYSECRET&x=1", bearer=allowed,
                                    headers={"User-Agent": "orders-app/1.0", "X-Request-Nonce": "n-1",
                                             "X-Forwarded-For": "203.0.113.7", "Cookie": "session=COOKIESECRET"})
    assert status == 200
    assert headers["x-gatewatch-risk"] == "5" and headers["x-gatewatch-action"] == "allow"
    assert "x-gatewatch-reason" not in headers  # the decision sent none: no empty header

    # Exactly the documented headers reach the decision endpoint: no body, no cookie, nothing else.
    asked = stack.decision.requests[-1]
    assert (asked["method"], asked["path"], asked["version"]) == ("GET", "/v1/decision", "HTTP/1.1")
    sent = {k.lower(): v for k, v in asked["headers"]}
    request_id = sent.pop("x-request-id")
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert sent == {"host": "gatewatch_decision", "authorization": f"Bearer {allowed}",
                    "user-agent": "orders-app/1.0", "x-request-nonce": "n-1", "x-original-method": "GET",
                    "x-original-uri": "/api/orders/7?access_token=QUERYSECRET&x=1", "x-gatewatch-tenant": "acme",
                    "x-gatewatch-route": "orders", "x-forwarded-for": "203.0.113.7"}
    upstream_saw = stack.upstream.requests[-1]
    assert upstream_saw["headers"]["Authorization"] == f"Bearer {allowed}"
    assert upstream_saw["headers"]["X-Request-ID"] == request_id

    status, _, _, _ = request(port, "POST", "/llm/v1/chat", bearer=allowed, body=b'{"prompt": "hi"}',
                              headers={"Content-Type": "application/json"})
    assert status == 200 and stack.upstream.requests[-1]["body"] == b'{"prompt": "hi"}'
    assert "content-length" not in {k.lower() for k, _ in stack.decision.requests[-1]["headers"]}

    # Deny and step-up reach the client with the decision's headers.
    status, headers, _, _ = request(port, "GET", "/api/orders", bearer=denied)
    assert status == 403 and headers["x-gatewatch-action"] == "deny" and headers["x-gatewatch-risk"] == "92"
    assert headers["x-gatewatch-reason"] == "token replayed from another network"
    status, headers, _, _ = request(port, "GET", "/api/orders", bearer=stepped)
    assert status == 401 and headers["x-gatewatch-action"] == "step_up"
    assert headers["www-authenticate"] == 'Bearer error="insufficient_user_authentication"'
    requests_to_upstream = len(stack.upstream.requests)

    status, _, _, _ = request(port, "GET", "/api/public")  # no token: the decision allows it here
    assert status == 200
    asked = {k.lower() for k, _ in stack.decision.requests[-1]["headers"]}
    assert "authorization" not in asked and "x-request-nonce" not in asked
    asks = len(stack.decision.requests)
    status, _, _, _ = request(port, "GET", "/nothing/here")  # outside every route: 404, nothing asked
    assert status == 404 and len(stack.decision.requests) == asks

    # Fail open: a decision slower than the 250 ms read timeout, one answering 500, then none at all.
    status, _, _, took = request(port, "GET", "/api/orders", bearer=slow)
    assert status == 200 and took < 1.5
    status, _, _, _ = request(port, "GET", "/api/orders", bearer=broken)
    assert status == 200
    stack.decision.stop()
    status, headers, _, _ = request(port, "GET", "/api/orders/8", bearer=allowed)
    assert status == 200 and "x-gatewatch-action" not in headers
    assert len(stack.upstream.requests) == requests_to_upstream + 4

    # Every request is an event in CONTRACT.md §1's shape, decoded by the strict decoder.
    expected = 9
    events = stack.events(expected)
    assert len(events) == expected, [e.path for e in events]
    by_id = {e.event_id: e for e in events}
    first = by_id[request_id]
    assert (first.tenant, first.route, first.gateway, first.method, first.path, first.status) == \
        ("acme", "orders", "edge-1", "GET", "/api/orders/7", 200)
    assert first.token == allowed and first.nonce == "n-1" and first.user_agent == "orders-app/1.0"
    assert first.client_ip == "203.0.113.7"
    assert RFC3339_MS.fullmatch(first.ts) and abs(EventDecoder(validator=None, max_event_bytes=1024)
                                                  .event_time(first.ts) - time.time()) < 120
    assert isinstance(first.latency_ms, float) and first.latency_ms >= 0
    assert isinstance(first.bytes_in, int) and first.bytes_in > 0 and isinstance(first.bytes_out, int)
    statuses = sorted((e.path, e.status, e.token is not None) for e in events)
    assert statuses == sorted([("/api/orders/7", 200, True), ("/llm/v1/chat", 200, True), ("/api/orders", 403, True),
                               ("/api/orders", 401, True), ("/api/public", 200, False), ("/nothing/here", 404, False),
                               ("/api/orders", 200, True), ("/api/orders", 200, True), ("/api/orders/8", 200, True)])
    tokens = {e.token for e in events if e.token}
    assert tokens == {allowed, denied, stepped, slow, broken}
    anonymous = [e for e in events if e.path == "/api/public"][0]
    assert anonymous.nonce is None and anonymous.user_agent is None and anonymous.client_ip == "127.0.0.1"
    unrouted = [e for e in events if e.path == "/nothing/here"][0]
    assert unrouted.tenant == "default" and unrouted.route is None
    llm = [e for e in events if e.path == "/llm/v1/chat"][0]
    assert (llm.tenant, llm.route, llm.method) == ("beta", "chat", "POST") and llm.bytes_in > 16

    assert stack.nginx.stop() == 0
    code, summary = stack.collector.stop()
    assert code == 0 and summary["published"] == expected and summary["dead_letters"] == 0 and summary["lost"] == 0

    # Raw tokens are on no disk: nothing under nginx's prefix (logs, temp files) nor the collector's log.
    leaks = files_containing(stack.prefix, [t.encode() for t in (allowed, denied, stepped, slow, broken)]
                             + [b"COOKIESECRET"])
    assert leaks == [], leaks
    assert "upstream timed out" in stack.nginx.stderr()  # the error log is there, and it was checked


@pytest.mark.parametrize("stack", ["udp"], indirect=True)  # the collector on udp:127.0.0.1:PORT here
@pytest.mark.parametrize("fail_status", [503, 403])
def test_fail_closed_answers_the_configured_status(stack: Stack, fail_status: int) -> None:
    good, slow, broken = token("alice"), token("carol"), token("dave")
    stack.decision.verdicts.update({slow: "hang", broken: "error"})
    stack.start_nginx(fail="closed", fail_status=fail_status)  # no trusted proxies
    port = stack.port

    status, headers, _, _ = request(port, "GET", "/api/x", bearer=good, headers={"X-Forwarded-For": "198.51.100.9"})
    assert status == 200 and headers["x-gatewatch-action"] == "allow"
    sent = dict((k.lower(), v) for k, v in stack.decision.requests[-1]["headers"])
    assert sent["x-forwarded-for"] == "127.0.0.1"  # an untrusted peer's X-Forwarded-For is not believed

    status, headers, _, took = request(port, "GET", "/api/x", bearer=slow)
    assert status == fail_status and took < 1.5
    assert ("retry-after" in headers) == (fail_status == 503)
    status, _, _, _ = request(port, "GET", "/api/x", bearer=broken)
    assert status == fail_status
    stack.decision.stop()
    status, headers, _, _ = request(port, "GET", "/api/x", bearer=good)
    assert status == fail_status
    assert len(stack.upstream.requests) == 1  # only the first one went through

    events = stack.events(4)
    assert sorted(e.status for e in events) == sorted([200, fail_status, fail_status, fail_status])
    assert {e.client_ip for e in events} == {"127.0.0.1"}
    stack.nginx.stop()
    code, summary = stack.collector.stop()
    assert code == 0 and summary["published"] == 4
    assert files_containing(stack.prefix, [t.encode() for t in (good, slow, broken)]) == []


def test_bad_datagrams_become_dead_letters_and_the_collector_goes_on(stack: Stack) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.connect(str(stack.socket))
    good = (b'<190>Dec  3 17:40:01 gatewatch: {"kind":"access","event_id":"e1","msec":"1796319712.077",'
            b'"gateway":"g","tenant":"t","client_ip":"192.0.2.1","method":"GET","path":"/p","status":"200",'
            b'"token":"","nonce":"","user_agent":""}')
    bad = [b"\xff\xfe not syslog", b"<190>Dec  3 17:40:01 gatewatch: {not json",
           b"<190>Dec  3 17:40:01 other: {}", b'<190>Dec  3 17:40:01 gatewatch: {"kind":"access"}',
           good.replace(b'"192.0.2.1"', b'"not-an-ip"')]
    for datagram in [*bad, good]:
        sock.send(datagram)
    sock.close()
    env = stack.kafka_env
    events = stack.events(1)
    assert [(e.event_id, e.token, e.nonce, e.ts) for e in events] == [("e1", None, None, "2026-12-03T17:41:52.077Z")]
    dead = [json.loads(m.value) for m in read_all(env["GATEWATCH_KAFKA__BOOTSTRAP_SERVERS"],
                                                  env["GATEWATCH_KAFKA__DLQ_TOPIC"], expect_at_least=5)]
    assert [d["code"] for d in sorted(dead, key=lambda d: d["source"]["offset"])] == \
        ["not_json", "not_json", "not_json", "schema", "invalid_field"]
    assert {d["stage"] for d in dead} == {"collect"}
    assert {d["source"]["topic"] for d in dead} == {f"syslog:unix:{stack.socket}"}
    assert base64.b64decode(dead[0]["original_b64"]) in bad
    code, summary = stack.collector.stop()
    assert code == 0 and summary["received"] == 6 and summary["published"] == 1
    assert summary["dead_letter_codes"] == {"not_json": 3, "schema": 1, "invalid_field": 1}
