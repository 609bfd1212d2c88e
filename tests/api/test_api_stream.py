"""GET /v1/alerts/stream: server-sent events over a real socket (uvicorn in a thread), tenants, resume, auth.

Every stream a test opens is bounded (`timeout=`/`max_events=` on the server, a read timeout on the
client), so a missing event fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from api.app import create_app
from api.routes import stream as stream_module
from scoring.alerts import Suppression

MUTE = Suppression(rule="scanner", owner="secops@example", expires="2026-12-01T00:00:00.000Z", reason="ours")
_READ = httpx.Timeout(10.0)


@pytest.fixture
def live(api_settings, store) -> Iterator[str]:
    """The app served by uvicorn on a free 127.0.0.1 port, in a background thread."""
    app = create_app(api_settings=api_settings, store=store)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    ready = threading.Event()
    for _ in range(200):
        if server.started:
            ready.set()
            break
        threading.Event().wait(0.05)
    assert ready.is_set(), "uvicorn did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)
    sock.close()


class Events:
    """Reads one SSE response: `next()` is the next event as {"id", "event", "data"}; comments are kept."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.iter_lines()
        self.comments: list[str] = []

    def next(self) -> dict[str, Any]:
        event: dict[str, Any] = {}
        for line in self.lines:
            if line == "":
                if event:
                    return event
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(": ")
            event[name] = json.loads(value) if name == "data" else value
        raise AssertionError(f"stream ended before the next event (comments: {self.comments})")

    def rest(self) -> list[dict[str, Any]]:
        """Every event until the server ends the stream."""
        out = []
        while True:
            try:
                out.append(self.next())
            except AssertionError:
                return out

    def wait_connected(self) -> None:
        for line in self.lines:
            if line == ": connected":
                return
        raise AssertionError("no `: connected` comment")


def _open(client: httpx.Client, base: str, key: str, **params: Any) -> Any:
    headers = {"Authorization": f"Bearer {key}"}
    if "last_event_id" in params:
        headers["Last-Event-ID"] = str(params.pop("last_event_id"))
    return client.stream("GET", f"{base}/v1/alerts/stream", params={"timeout": 20, **params}, headers=headers,
                         timeout=_READ)


def test_new_and_changed_alerts_arrive_as_events(live, store, creds, make_alert):
    store.upsert_alerts([make_alert(1)])  # before connecting: not sent (the stream starts at the head)
    with httpx.Client() as client, _open(client, live, creds["analyst"]) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = Events(r)
        events.wait_connected()
        got = []
        store.upsert_alerts([make_alert(2)])
        got.append(events.next())
        store.triage(make_alert(1).id, None, actor="ann", at="2026-11-28T12:00:00.000Z", status="acknowledged")
        got.append(events.next())
        store.upsert_alerts([make_alert(3, tenant="globex", suppression=MUTE)])
        got.append(events.next())
        store.upsert_alerts([make_alert(2)])  # no visible change: no event
        store.upsert_alerts([make_alert(2, count=7)])
        got.append(events.next())
        assert [(e["event"], int(e["id"]), e["data"]["id"]) for e in got] == [
            ("alert", 2, make_alert(2).id), ("alert", 3, make_alert(1).id), ("alert", 4, make_alert(3).id),
            ("alert", 5, make_alert(2).id)]
        by_seq = {int(e["id"]): e["data"] for e in got}
        assert by_seq[3]["status"] == "acknowledged" and by_seq[3]["audit"][0]["actor"] == "ann"
        assert by_seq[4]["suppression"]["rule"] == "scanner"  # muted alerts are streamed too
        assert by_seq[5]["count"] == 7
        # The data is exactly what GET /v1/alerts/{id} answers.
        for seq in (3, 4, 5):
            one = client.get(f"{live}/v1/alerts/{by_seq[seq]['id']}",
                             headers={"Authorization": f"Bearer {creds['analyst']}"}).json()
            assert by_seq[seq] == one


def test_a_tenant_credential_never_receives_other_tenants(live, store, creds, make_alert):
    with httpx.Client() as client, _open(client, live, creds["viewer-acme"], max_events=2) as r:
        events = Events(r)
        events.wait_connected()
        store.upsert_alerts([make_alert(1, tenant="globex")])
        store.upsert_alerts([make_alert(2, tenant="acme")])
        store.upsert_alerts([make_alert(3, tenant="globex"), make_alert(4, tenant="globex")])
        store.triage(make_alert(1).id, None, actor="x", at="2026-11-28T12:00:00.000Z", status="resolved")
        store.upsert_alerts([make_alert(5, tenant="acme")])
        got = events.rest()  # the server ends the stream after max_events=2
    assert [(int(e["id"]), e["data"]["id"], e["data"]["tenant"]) for e in got] == [
        (2, make_alert(2).id, "acme"), (6, make_alert(5).id, "acme")]


def test_last_event_id_resumes_where_the_client_left(live, store, creds, make_alert):
    key = creds["viewer-acme"]
    store.upsert_alerts([make_alert(1)])
    with httpx.Client() as client:
        with _open(client, live, key) as r:
            events = Events(r)
            events.wait_connected()
            store.upsert_alerts([make_alert(2)])
            first = events.next()
        assert first["data"]["id"] == make_alert(2).id
        # Disconnected: these happen while nobody listens.
        store.upsert_alerts([make_alert(3), make_alert(4, tenant="globex")])
        store.triage(make_alert(1).id, None, actor="x", at="2026-11-28T12:00:00.000Z", note="seen")
        with _open(client, live, key, last_event_id=first["id"], max_events=2) as r:
            missed = Events(r).rest()
        assert [(int(e["id"]), e["data"]["id"]) for e in missed] == [(3, make_alert(3).id), (5, make_alert(1).id)]
        assert missed[1]["data"]["notes"][0]["text"] == "seen"
        # `?after=` does the same; Last-Event-ID wins over it (an EventSource reconnects to the same URL).
        with _open(client, live, key, after=3, max_events=1) as r:
            assert [int(e["id"]) for e in Events(r).rest()] == [5]
        with _open(client, live, key, after=0, last_event_id=3, max_events=1) as r:
            assert [int(e["id"]) for e in Events(r).rest()] == [5]


def test_client_disconnect_ends_the_server_side_stream(live, store, creds, monkeypatch, make_alert):
    ended = threading.Event()
    failures: list[str] = []
    original = stream_module._changes

    async def watched(*args: Any, **kw: Any) -> Any:
        try:
            async for chunk in original(*args, **kw):
                yield chunk
        except BaseException as exc:  # how it ended, for the assertion message
            failures.append(repr(exc))
            raise
        finally:
            ended.set()

    monkeypatch.setattr(stream_module, "_changes", watched)
    with httpx.Client(timeout=_READ) as client:
        r = client.send(client.build_request(
            "GET", f"{live}/v1/alerts/stream", headers={"Authorization": f"Bearer {creds['analyst']}"}),
            stream=True)  # no timeout, no max_events: only the disconnect can end it
        events = Events(r)
        events.wait_connected()
        store.upsert_alerts([make_alert(1)])
        assert events.next()["data"]["id"] == make_alert(1).id, failures  # the stream is live ...
        r.close()  # ... until the client leaves
    assert ended.wait(30), "the server kept streaming to a client that left"
    assert all("CancelledError" in f or "GeneratorExit" in f for f in failures), failures


def test_finite_stream_over_asgi_and_route_order(client, store, creds, auth, make_alert):
    # An alert whose id is literally "stream" must not shadow the stream route.
    store.upsert_alerts([make_alert(1, id="stream"), make_alert(2)])
    r = client.get("/v1/alerts/stream", params={"after": 0, "max_events": 2}, headers=auth(creds["analyst"]))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.text.startswith(": connected\n\n")
    blocks = [b for b in r.text.split("\n\n") if b and not b.startswith(":")]
    assert [b.splitlines()[:2] for b in blocks] == [["id: 1", "event: alert"], ["id: 2", "event: alert"]]
    assert json.loads(blocks[0].splitlines()[2].removeprefix("data: "))["id"] == "stream"


def test_keep_alive_comments(client, creds, auth, monkeypatch):
    monkeypatch.setattr(stream_module, "KEEP_ALIVE_SECONDS", 0.0)
    monkeypatch.setattr(stream_module, "POLL_SECONDS", 0.01)
    r = client.get("/v1/alerts/stream", params={"timeout": 0.2}, headers=auth(creds["analyst"]))
    assert r.status_code == 200
    assert ": keep-alive\n\n" in r.text and "event:" not in r.text


@pytest.mark.parametrize("key,status,code", [(None, 401, "unauthorized"), ("gateway", 403, "forbidden"),
                                             ("bogus", 401, "unauthorized")])
def test_stream_needs_alerts_read(client, creds, key, status, code):
    headers = {} if key is None else {"Authorization": f"Bearer {creds.get(key, 'not-a-key')}"}
    r = client.get("/v1/alerts/stream", params={"timeout": 1}, headers=headers)
    assert r.status_code == status
    assert r.json()["error"]["code"] == code and "event:" not in r.text


@pytest.mark.parametrize("params,headers", [
    ({"after": -1}, {}), ({"max_events": 0}, {}), ({"timeout": 0}, {}), ({"timeout": 99999}, {}),
    ({}, {"Last-Event-ID": "abc"}), ({}, {"Last-Event-ID": "-3"}), ({}, {"Last-Event-ID": "1²".encode("latin-1")}),  # isdigit(), not ASCII
])
def test_bad_stream_parameters_are_400(client, creds, auth, params, headers):
    r = client.get("/v1/alerts/stream", params={"max_events": 1, **params},
                   headers={**auth(creds["analyst"]), **headers})
    assert r.status_code == 400
    assert set(r.json()) == {"error"} and r.json()["error"]["code"] == "bad_request"


def test_changes_since(store, make_alert):
    store.upsert_alerts([make_alert(1), make_alert(2, tenant="globex"), make_alert(3, suppression=MUTE)])
    store.triage(make_alert(1).id, None, actor="x", at="2026-11-28T12:00:00.000Z", status="resolved")
    assert [(c.seq, c.alert.id) for c in store.changes_since(0)] == [
        (2, make_alert(2).id), (3, make_alert(3).id), (4, make_alert(1).id)]  # alert 1 once, newest state
    assert store.changes_since(0)[-1].alert.status == "resolved"
    assert [c.seq for c in store.changes_since(0, {"acme"})] == [3, 4]
    assert [c.seq for c in store.changes_since(0, limit=2)] == [2, 3]
    assert [c.seq for c in store.changes_since(3)] == [4]
    assert store.changes_since(4) == [] and store.changes_since(0, set()) == []
