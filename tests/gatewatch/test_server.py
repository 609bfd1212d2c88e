"""gatewatch/server.py: header timeout, connection cap and summarised logging, against a real uvicorn
server in a thread on a free 127.0.0.1 port (raw sockets for the misbehaving clients).

Socket timeouts are safety nets only: a server that never closes or never answers fails the test
instead of hanging it. No test asserts a duration.
"""

from __future__ import annotations

import asyncio
import errno
import http.client
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from api.app import create_app
from api.errors import ErrorBody
from api.store import AlertStore
from gatewatch import server as server_module
from gatewatch.cli import main
from gatewatch.server import ConnectionGuard, QuietListener, build_server
from gatewatch.settings import ApiSettings, load_settings
from ingest.errors import ConfigError
from tests.conftest import write_config

SAFETY = 10.0  # seconds a socket waits before the test gives up on the server
PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: gatewatch\r\nUser-Agent: slow"


@pytest.fixture
def app(keys_dir: Path) -> Iterator[Any]:
    store = AlertStore(":memory:")
    settings = ApiSettings(jwks=keys_dir / "api-issuer.jwks.json", api_keys=keys_dir / "api-keys.json")
    yield create_app(api_settings=settings, store=store)
    store.close()


@contextmanager
def running(app: Any, listener: socket.socket | None = None, *, started: list[Any] | None = None,
            **kw: Any) -> Iterator[int]:
    """`build_server(app, **kw)` serving on a free 127.0.0.1 port in a thread; yields the port (and appends
    the server to `started`)."""
    sock = listener or socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    kw.setdefault("log_config", None)
    server = build_server(app, host="127.0.0.1", port=0, lifespan="off", timeout_graceful_shutdown=2, **kw)
    if started is not None:
        started.append(server)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + SAFETY
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(SAFETY)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not stop"


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=SAFETY)


def closed_by_server(s: socket.socket) -> bool:
    """Reads until the server closes (b"") or the safety timeout; True when it closed."""
    try:
        while True:
            data = s.recv(4096)
            if not data:
                return True
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


def get(port: int, path: str = "/healthz") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=SAFETY)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def served_again(port: int) -> int:
    """The status of /healthz once it is 200 (a freed place is served once the server has seen the close),
    else the last one within SAFETY."""
    status = 0
    for _ in range(int(SAFETY / 0.05)):
        status, _ = get(port)
        if status == 200:
            break
        time.sleep(0.05)
    return status


def read_answer(s: socket.socket) -> tuple[int, bytes]:
    """One response with a Content-Length, without waiting for the server to close."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, "closed before a complete response head"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, "closed before a complete response body"
        body += chunk
    return int(head.split()[1]), body


def read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Everything the server sends until it closes, parsed as one HTTP/1.1 response."""
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def summaries(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gatewatch.server" and needle in r.getMessage()]


# -- header timeout ----------------------------------------------------------------------------------
def test_a_partial_request_head_is_closed_while_others_are_served(app: Any) -> None:
    with running(app, header_timeout=0.5, max_connections=50) as port:
        slow = connect(port)
        slow.sendall(PARTIAL_HEAD)
        assert get(port) == (200, b'{"status":"ok"}')
        assert closed_by_server(slow), "a connection that never finished its request head was kept open"
        assert get(port)[0] == 200
        slow.close()


def test_a_head_trickled_a_byte_at_a_time_is_closed_anyway(app: Any) -> None:
    """Bytes arriving do not restart the timer: only a complete head stops it."""
    with running(app, header_timeout=0.5, max_connections=50) as port:
        slow = connect(port)
        closed = False
        for byte in (PARTIAL_HEAD + b"x" * 10_000)[:400]:  # 400 x 0.05 s: the safety net
            try:
                slow.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if select.select([slow], [], [], 0.05)[0]:
                closed = closed_by_server(slow)
                break
        assert closed, "a client trickling its head kept the connection open"
        slow.close()


def test_keep_alive_gets_a_new_head_timeout_after_each_response(app: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    # uvicorn's own keep-alive timeout far beyond the head timeout: only the head timeout can close these
    with running(app, header_timeout=0.5, max_connections=50, timeout_keep_alive=60, log_interval=600) as port:
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=SAFETY) for _ in range(2)]
        for conn in conns:
            for _ in range(3):  # one connection, several requests
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                assert (response.status, response.read()) == (200, b'{"status":"ok"}')
        trickling, idle = (conn.sock for conn in conns)
        assert trickling is not None and idle is not None
        trickling.sendall(PARTIAL_HEAD)  # the next request's head, never finished
        assert closed_by_server(trickling)
        assert closed_by_server(idle), "an idle keep-alive connection outlived the head timeout"
        for conn in conns:
            conn.close()
    # the idle one is ordinary keep-alive expiry: closed, but not counted as a timed-out head
    (line,) = summaries(caplog, "no complete request head")
    assert line.startswith("closed 1 connection that sent no complete request head")


def test_a_silent_connection_is_closed_but_a_slow_response_is_not() -> None:
    """The timer covers the wait for a head only: a request slower to answer than it is not cut off."""
    async def slow_app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        await asyncio.sleep(1.5)  # three header timeouts
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": b"done"})

    with running(slow_app, header_timeout=0.5, max_connections=5) as port:
        silent = connect(port)
        assert closed_by_server(silent), "a connection that sent nothing was kept open"
        silent.close()
        assert get(port, "/") == (200, b"done")


# -- connection cap ----------------------------------------------------------------------------------
def test_over_the_cap_a_connection_gets_503_json_at_once(app: Any) -> None:
    with running(app, header_timeout=30, max_connections=3, timeout_keep_alive=60) as port:
        idle = []
        for _ in range(3):  # the cap, full of idle keep-alive connections that have each been served
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=SAFETY)
            conn.request("GET", "/healthz")
            assert conn.getresponse().read() == b'{"status":"ok"}'
            idle.append(conn)

        extra = connect(port)
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: gatewatch\r\n\r\n")
        status, headers, body = read_response(extra)  # the server answers and closes: no hang
        extra.close()
        assert status == 503
        assert headers["connection"] == "close" and headers["content-type"] == "application/json"
        assert headers["retry-after"] == "2"
        assert int(headers["content-length"]) == len(body)
        error = ErrorBody.model_validate(json.loads(body)).error
        assert error.code == "unavailable" and error.message

        silent = connect(port)  # the answer does not wait for a request
        assert read_response(silent)[0] == 503
        silent.close()

        idle.pop().close()  # a freed place is served again (once the server has seen the close)
        assert served_again(port) == 200
        for conn in idle:
            conn.close()


def test_refused_connections_do_not_take_places(app: Any) -> None:
    with running(app, header_timeout=30, max_connections=1, timeout_keep_alive=60) as port:
        holder = http.client.HTTPConnection("127.0.0.1", port, timeout=SAFETY)
        holder.request("GET", "/healthz")
        assert holder.getresponse().read() == b'{"status":"ok"}'
        refused = [connect(port) for _ in range(5)]
        assert [read_response(s)[0] for s in refused] == [503] * 5
        holder.close()
        assert served_again(port) == 200
        for s in refused:
            s.close()


def test_a_flood_of_refused_connections_does_not_hold_descriptors(app: Any) -> None:
    """Refused connections linger (write side shut, reading what they send so the close cannot reset the
    answer away) only up to a bound; beyond it they are closed as soon as answered."""
    servers: list[Any] = []
    with running(app, header_timeout=120, max_connections=1, timeout_keep_alive=60, linger=60,
                 max_lingering=2, started=servers) as port:
        holder = http.client.HTTPConnection("127.0.0.1", port, timeout=SAFETY)
        holder.request("GET", "/healthz")
        assert holder.getresponse().read() == b'{"status":"ok"}'
        refused = []
        for _ in range(6):  # one after the other: the first two linger
            s = connect(port)
            status, body = read_answer(s)
            assert status == 503 and json.loads(body)["error"]["code"] == "unavailable"
            refused.append(s)
        assert all(closed_by_server(s) for s in refused)  # each sees the end of its answer
        assert len(servers[0].guard.lingering) == 2, "refused connections beyond the bound were kept open"
        for s in refused:
            s.close()
        holder.close()


# -- logging -----------------------------------------------------------------------------------------
def test_many_timed_out_connections_make_one_log_line(app: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with running(app, header_timeout=0.5, max_connections=100, log_interval=600) as port:
        slow = [connect(port) for _ in range(20)]
        for s in slow:
            s.sendall(PARTIAL_HEAD)
        assert all(closed_by_server(s) for s in slow)
        for s in slow:
            s.close()
    # the window is written at shutdown at the latest
    (line,) = summaries(caplog, "no complete request head")
    assert line.startswith("closed 20 connections that sent no complete request head within 0.5 s")
    assert not [r for r in caplog.records if r.exc_info], "no tracebacks"


def test_refusals_and_invalid_requests_are_summarised(app: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with running(app, header_timeout=30, max_connections=1, log_interval=600, timeout_keep_alive=60) as port:
        for _ in range(10):  # each gets 400 (uvicorn alone: one warning each)
            s = connect(port)
            s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            assert read_response(s)[0] == 400
            s.close()
        holder = connect(port)
        holder.sendall(b"GET /healthz HTTP/1.1\r\nHost: g\r\n\r\n")
        assert holder.recv(12) == b"HTTP/1.1 200"
        for _ in range(8):
            s = connect(port)
            assert read_response(s)[0] == 503
            s.close()
        holder.close()
    (refused,) = summaries(caplog, "refused")
    assert refused.startswith("refused 8 connections with 503: 1 already open ([api] max_connections)")
    (invalid,) = summaries(caplog, "invalid HTTP request")
    assert invalid.startswith("answered 10 invalid HTTP requests with 400")
    assert not [r for r in caplog.records if "Invalid HTTP request received" in r.getMessage()]


class FlakyListener(QuietListener):
    """The listener `serve` binds, whose first `failures` accepts fail as under descriptor exhaustion.
    `storms` counts failures after the first within one event-loop iteration."""

    failures = 25
    storms = 0
    _failed_in_iteration = False

    def _accept(self) -> Any:
        if self.failures > 0:
            self.failures -= 1
            if self._failed_in_iteration:
                self.storms += 1
            else:
                self._failed_in_iteration = True
                asyncio.get_running_loop().call_soon(setattr, self, "_failed_in_iteration", False)
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return super()._accept()  # type: ignore[misc]


def test_failed_accepts_make_one_line_not_a_traceback_each(app: Any, caplog: pytest.LogCaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("asyncio.constants.ACCEPT_RETRY_DELAY", 0.01)  # asyncio's pause after a failed accept
    caplog.set_level(logging.INFO)
    listener = FlakyListener(socket.AF_INET, socket.SOCK_STREAM)
    with running(app, listener, header_timeout=5, max_connections=10, log_interval=600) as port:
        assert get(port) == (200, b'{"status":"ok"}')  # served once the accepts succeed again
        assert listener.failures == 0
    assert listener.storms == 0, "accept() was retried in the same event-loop iteration after running out"
    (line,) = summaries(caplog, "accepting connections failed")
    assert line.startswith("accepting connections failed 25 times") and "(EMFILE 25)" in line
    assert not [r for r in caplog.records if r.name == "asyncio"], "asyncio logged the failures one by one"


def test_summaries_are_one_line_per_condition_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    guard = ConnectionGuard(header_timeout=10, max_connections=5, log_interval=10, clock=lambda: now[0])
    caplog.set_level(logging.INFO)
    for t in (0.0, 1.0, 9.0):
        now[0] = t
        guard.note("header_timeout")
        guard.note("refused")
        guard.flush()
    assert not caplog.records  # the window opened at 0 is still open
    now[0] = 10.0
    guard.note("header_timeout")
    guard.flush()
    assert [r.getMessage().split(" that")[0].split(" with")[0] for r in caplog.records] == [
        "closed 4 connections", "refused 3 connections"]
    caplog.clear()
    now[0] = 11.0
    guard.note("header_timeout")
    guard.flush()
    now[0] = 20.0
    guard.flush()
    assert not caplog.records
    guard.flush(force=True)
    assert [r.getMessage()[:19] for r in caplog.records] == ["closed 1 connection"]


# -- wiring --------------------------------------------------------------------------------------------
def test_settings_defaults_and_validation(tmp_path: Path) -> None:
    api = load_settings(environ={}).api
    assert api.header_timeout_seconds == 10 and api.max_connections == 1000
    for key, bad in (("HEADER_TIMEOUT_SECONDS", "0"), ("HEADER_TIMEOUT_SECONDS", "-1"),
                     ("MAX_CONNECTIONS", "0"), ("MAX_CONNECTIONS", "many")):
        with pytest.raises(ConfigError, match=rf"api\.{key.lower()}"):
            load_settings(environ={f"GATEWATCH_API__{key}": bad})


def test_serve_command_passes_the_settings(tmp_path: Path, keys_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(server_module, "serve", lambda app, **kw: seen.update(kw, app=app))
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: seen.update(unguarded=kw))  # must not be used
    monkeypatch.setenv("GATEWATCH_API__HEADER_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("GATEWATCH_API__MAX_CONNECTIONS", "7")
    cfg = write_config(tmp_path, keys_dir)
    assert main(["--config", str(cfg), "serve", "--bind", "127.0.0.1:8123"]) == 0
    assert "unguarded" not in seen
    assert {k: seen.get(k) for k in ("host", "port", "header_timeout", "max_connections")} == {
        "host": "127.0.0.1", "port": 8123, "header_timeout": 2.5, "max_connections": 7}


def test_gatewatch_serve_guards_its_connections(tmp_path: Path, keys_dir: Path) -> None:
    """The real command in its own process: `[api]` settings, the bound listener, the summaries at exit."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "GATEWATCH_API__BIND": f"127.0.0.1:{port}", "GATEWATCH_API__MAX_CONNECTIONS": "2",
           "GATEWATCH_API__HEADER_TIMEOUT_SECONDS": "0.5"}
    proc = subprocess.Popen([sys.executable, "-m", "gatewatch.cli", "--config", str(write_config(tmp_path, keys_dir)),
                             "serve"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(int(SAFETY / 0.05)):
            try:
                status = get(port)[0]
                break
            except OSError:
                assert proc.poll() is None, "gatewatch serve exited"
                time.sleep(0.05)
        assert status == 200
        silent = connect(port)
        assert closed_by_server(silent)
        silent.close()
        held = [http.client.HTTPConnection("127.0.0.1", port, timeout=SAFETY) for _ in range(2)]
        for conn in held:
            conn.request("GET", "/healthz")
            assert conn.getresponse().read() == b'{"status":"ok"}'
        extra = connect(port)
        assert read_response(extra)[0] == 503
        extra.close()
        for conn in held:
            conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=SAFETY)
    assert "closed 1 connection that sent no complete request head within 0.5 s" in err
    assert "refused 1 connection with 503: 2 already open" in err
    assert "Traceback" not in err


def test_the_open_file_limit_is_raised_to_fit_the_cap(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    import resource

    limits = {"soft": 1024, "hard": 1500}
    monkeypatch.setattr(resource, "getrlimit", lambda _: (limits["soft"], limits["hard"]))
    monkeypatch.setattr(resource, "setrlimit", lambda _, v: limits.update(soft=v[0]))
    server_module.ensure_fd_room(1000)
    assert limits["soft"] == 1000 + server_module.FD_HEADROOM and not caplog.records
    server_module.ensure_fd_room(5000)  # beyond the hard limit: as far as it goes, and a warning
    assert limits["soft"] == 1500
    assert ["max_connections = 5000" in r.getMessage() for r in caplog.records] == [True]
