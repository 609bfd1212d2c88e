"""The HTTP server of `gatewatch serve`: uvicorn's h11 protocol with a header timeout and a connection cap.

uvicorn (0.54) bounds neither: a connection that never completes a request head has no timer at all
(`timeout_keep_alive` starts only after a response, and any byte cancels it), and `limit_concurrency`
is checked only once a complete head has arrived, counts the asking connection itself, answers
text/plain and logs one warning per refusal. So, in `GuardedH11Protocol`:

- Header timeout. While a connection waits for a request head (h11 `their_state` IDLE: just connected,
  or its previous response sent and the connection kept alive) a timer of `header_timeout` seconds runs;
  the first complete head stops it, and bytes arriving meanwhile do not restart it (a client trickling a
  header a byte at a time is closed like a silent one). A slow body or a long response (SSE) is not
  affected. An idle keep-alive connection that sends nothing is closed quietly, as uvicorn's own
  keep-alive timeout would.
- Connection cap. At most `max_connections` connections are served; the next one is answered at once,
  without waiting for its request, `503` with the API's error body (`{"error": {"code": "unavailable",
  ...}}`), `Retry-After` and `Connection: close`. Its write side is then shut; what it sends is read and
  dropped (so the close cannot reset the answer away) until it closes or `REFUSAL_LINGER_SECONDS` pass.
  At most `MAX_LINGERING` refused connections linger so; beyond that (a flood) one is closed as soon as
  it is answered, so descriptors stay bounded by about `max_connections` + `MAX_LINGERING` (plus, for a
  moment, what one accept round takes in: asyncio accepts up to `backlog` connections before any of
  them is seen here).
- Logging. Conditions a client can cause at will are counted, and written as one line per condition per
  `log_interval` (the first occurrence opens a window; its line, with the count, is written when the
  window ends, and at shutdown): header timeouts, refusals, invalid requests (uvicorn: one warning each),
  unsupported `Upgrade` requests (uvicorn: two warnings each), and failed accepts out of file descriptors
  or memory (asyncio: one traceback each).
- Failed accepts. On EMFILE and the like, asyncio (3.11) pauses accepting for a second but first keeps
  calling accept() up to `backlog` (2048) times in the same round, each failing and each logged with a
  traceback and each scheduling another retry. `QuietListener`, the listening socket `serve()` binds,
  fails at most once per event-loop iteration: the pause stays, the storm goes.

`serve()` also raises the soft open-file limit to fit `max_connections`, as far as the hard limit allows.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import h11
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.errors import ServiceUnavailable, error_body

log = logging.getLogger(__name__)

LOG_INTERVAL_SECONDS = 10.0
REFUSAL_LINGER_SECONDS = 2.0  # at most (never more than the header timeout)
MAX_LINGERING = 64  # refused connections lingering at once; beyond, closed as soon as answered
FD_HEADROOM = 256  # descriptors beyond max_connections: listener, store, refused connections lingering
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_INVALID_REQUEST = "Invalid HTTP request received."  # uvicorn's h11_impl warning, one per bad request


def _refusal_response() -> bytes:
    body = json.dumps(error_body(ServiceUnavailable.code, "too many open connections; retry shortly"),
                      separators=(",", ":")).encode()
    head = (f"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nretry-after: 2\r\nconnection: close\r\n\r\n")
    return head.encode("ascii") + body


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class ConnectionGuard:
    """Shared by the connections of one server: the limits, who is being served, and the log summaries."""

    def __init__(self, *, header_timeout: float, max_connections: int,
                 log_interval: float = LOG_INTERVAL_SECONDS, linger: float = REFUSAL_LINGER_SECONDS,
                 max_lingering: int = MAX_LINGERING, clock: Callable[[], float] = time.monotonic) -> None:
        if not header_timeout > 0:
            raise ValueError("header_timeout must be positive")
        if max_connections < 1:
            raise ValueError("max_connections must be 1 or more")
        if not log_interval > 0 or not linger > 0:
            raise ValueError("log_interval and linger must be positive")
        if max_lingering < 0:
            raise ValueError("max_lingering must be 0 or more")
        self.header_timeout = float(header_timeout)
        self.max_connections = int(max_connections)
        self.log_interval = float(log_interval)
        self.linger = min(linger, self.header_timeout)
        self.max_lingering = max_lingering
        self.refusal = _refusal_response()
        self.served: set[GuardedH11Protocol] = set()
        self.lingering: set[GuardedH11Protocol] = set()
        self._clock = clock
        self._windows: dict[str, tuple[float, Counter[str]]] = {}  # condition -> (opened at, counts by detail)

    # -- the protocol class --------------------------------------------------------------------------
    def protocol_class(self) -> type[GuardedH11Protocol]:
        """`GuardedH11Protocol` bound to this guard, for `uvicorn.Config(http=...)`."""
        return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": self})

    # -- summaries -----------------------------------------------------------------------------------
    def note(self, condition: str, detail: str = "") -> None:
        """Count one occurrence; the first of a window opens it."""
        window = self._windows.get(condition)
        if window is None:
            window = self._windows[condition] = (self._clock(), Counter())
        window[1][detail] += 1

    def flush(self, *, force: bool = False) -> None:
        """Write the line of every window at least `log_interval` old (of every window, when `force`)."""
        now = self._clock()
        for condition, (opened, counts) in list(self._windows.items()):
            if force or now - opened >= self.log_interval:
                del self._windows[condition]
                level, message = self._describe(condition, counts, max(now - opened, 0.0))
                log.log(level, message)

    def _describe(self, condition: str, counts: Counter[str], seconds: float) -> tuple[int, str]:
        n = sum(counts.values())
        span = f"in the last {seconds:.1f} s"
        if condition == "header_timeout":
            return logging.WARNING, (f"closed {_plural(n, 'connection')} that sent no complete request head "
                                     f"within {self.header_timeout:g} s ([api] header_timeout_seconds), {span}")
        if condition == "refused":
            return logging.WARNING, (f"refused {_plural(n, 'connection')} with 503: {self.max_connections} "
                                     f"already open ([api] max_connections), {span}")
        if condition == "invalid_request":
            return logging.WARNING, f"answered {_plural(n, 'invalid HTTP request')} with 400, {span}"
        if condition == "upgrade":
            return logging.WARNING, f"ignored {_plural(n, 'unsupported Upgrade request')}, {span}"
        details = ", ".join(f"{name} {count}" for name, count in counts.most_common())
        if condition == "accept":
            return logging.ERROR, (f"accepting connections failed {_plural(n, 'time')} {span} ({details}): the "
                                   "process is out of file descriptors or memory; new connections wait in the "
                                   "listen backlog and accepting is retried every second")
        return logging.ERROR, f"{condition}: {_plural(n, 'time')} {span} ({details})"

    # -- the event loop's exception handler ----------------------------------------------------------
    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Count out-of-resource errors the loop would log with a traceback each (asyncio: every failed
        accept); everything else goes to the handler in place before."""
        previous = loop.get_exception_handler()

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            exc = context.get("exception")
            if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS:
                name = errno.errorcode.get(exc.errno, str(exc.errno))
                message = str(context.get("message", ""))
                self.note("accept" if "accept" in message else f"out of resources ({message})", name)
                return
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handler)


class _ProtocolLogger:
    """uvicorn's logger as one connection sees it: the invalid-request warning is counted, not written."""

    def __init__(self, logger: logging.Logger, guard: ConnectionGuard) -> None:
        self._logger = logger
        self._guard = guard

    def warning(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        if msg == _INVALID_REQUEST and not args:
            self._guard.note("invalid_request")
            return
        self._logger.warning(msg, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)


class GuardedH11Protocol(H11Protocol):
    """One connection; see the module docstring. `guard` is set by `ConnectionGuard.protocol_class()`."""

    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = _ProtocolLogger(self.logger, self.guard)  # type: ignore[assignment]
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = False  # bytes arrived while the head timer ran
        self._responses = 0

    # -- connection ----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.guard.served) >= self.guard.max_connections:
            self._refuse()
            return
        self.guard.served.add(self)
        self._sync_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self.guard.served.discard(self)
        self.guard.lingering.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered already: read and dropped until the client closes or the linger ends
        if self._head_timer is not None:
            self._head_bytes = True
        super().data_received(data)
        self._sync_head_timer()

    def on_response_complete(self) -> None:
        self._responses += 1
        super().on_response_complete()  # may start the next, pipelined request
        self._sync_head_timer()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        # The connection leaves HTTP (and this protocol); `serve` configures no WebSocket protocol anyway.
        self._cancel_head_timer()
        self.guard.served.discard(self)
        super().handle_websocket_upgrade(event)

    def _unsupported_upgrade_warning(self) -> None:
        self.guard.note("upgrade")  # uvicorn: two warnings per request that asks for an Upgrade

    # -- header timeout ------------------------------------------------------------------------------
    def _sync_head_timer(self) -> None:
        """The head timer runs exactly while the connection waits for a request head."""
        waiting = not self.transport.is_closing() and self.conn.their_state is h11.IDLE
        if not waiting:
            self._cancel_head_timer()
        elif self._head_timer is None:
            self._head_bytes = False
            self._head_timer = self.loop.call_later(self.guard.header_timeout, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_bytes or self._responses == 0:
            self.guard.note("header_timeout")  # else an idle keep-alive connection, closed quietly
        try:
            self.conn.send(h11.ConnectionClosed())
        except h11.LocalProtocolError:
            pass
        self.transport.close()

    # -- connection cap ------------------------------------------------------------------------------
    def _refuse(self) -> None:
        self._refused = True
        self.guard.note("refused")
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(self.guard.refusal)  # a peer gone already: the transport closes itself, quietly
        if transport.is_closing():
            return
        if len(self.guard.lingering) >= self.guard.max_lingering or not transport.can_write_eof():
            transport.close()  # the answer is flushed first
            return
        try:
            transport.write_eof()
        except OSError:  # the peer reset meanwhile
            transport.abort()
            return
        self.guard.lingering.add(self)
        self._head_timer = self.loop.call_later(self.guard.linger, transport.close)


class QuietListener(socket.socket):
    """A listening socket whose accept() fails for want of descriptors or memory at most once per event-loop
    iteration (asyncio then pauses accepting for a second); later calls in that iteration find nothing."""

    _resting = False

    @classmethod
    def wrap(cls, sock: socket.socket) -> QuietListener:
        return cls(sock.family, sock.type, sock.proto, fileno=sock.detach())

    def accept(self) -> tuple[socket.socket, Any]:
        if self._resting:
            raise BlockingIOError(errno.EAGAIN, "accepting rests until the next event-loop iteration")
        try:
            return super().accept()
        except OSError as exc:
            if exc.errno in _RESOURCE_ERRNOS:
                self._resting = True
                asyncio.get_running_loop().call_soon(self._rest_over)
            raise

    def _rest_over(self) -> None:
        self._resting = False


class GuardedServer(uvicorn.Server):
    """uvicorn's server plus the guard's loop exception handler and its summaries, flushed every tick
    (0.1 s) and at shutdown."""

    def __init__(self, config: uvicorn.Config, guard: ConnectionGuard) -> None:
        super().__init__(config)
        self.guard = guard

    async def startup(self, sockets: list[Any] | None = None) -> None:
        self.guard.install(asyncio.get_running_loop())
        await super().startup(sockets=sockets)

    async def on_tick(self, counter: int) -> bool:
        self.guard.flush()
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        try:
            await super().shutdown(sockets=sockets)
        finally:
            self.guard.flush(force=True)


def build_server(app: Any, *, host: str, port: int, header_timeout: float, max_connections: int,
                 log_interval: float = LOG_INTERVAL_SECONDS, linger: float = REFUSAL_LINGER_SECONDS,
                 max_lingering: int = MAX_LINGERING, **config: Any) -> GuardedServer:
    """A uvicorn server for `app` with the guard; `config` are further `uvicorn.Config` arguments."""
    guard = ConnectionGuard(header_timeout=header_timeout, max_connections=max_connections,
                            log_interval=log_interval, linger=linger, max_lingering=max_lingering)
    config.setdefault("log_level", "warning")
    # asyncio's own loop, even with uvloop installed (gatewatch decide's): the guard counts failed accepts
    # through asyncio's exception handler and its retry pause, which uvloop does not have.
    config.setdefault("loop", "asyncio")
    return GuardedServer(uvicorn.Config(app, host=host, port=port, http=guard.protocol_class(), ws="none",
                                        **config), guard)


def serve(app: Any, *, host: str, port: int, header_timeout: float, max_connections: int) -> None:
    """Serve `app` until SIGINT/SIGTERM, as `uvicorn.run(app, host=, port=, log_level="warning")` would,
    with the header timeout and connection cap (`[api] header_timeout_seconds`, `max_connections`)."""
    ensure_fd_room(max_connections)
    server = build_server(app, host=host, port=port, header_timeout=header_timeout,
                          max_connections=max_connections)
    listener = QuietListener.wrap(server.config.bind_socket())  # a bind failure: logged, exit 3
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)


def ensure_fd_room(max_connections: int) -> None:
    """Raise the soft open-file limit to `max_connections` + `FD_HEADROOM` as far as the hard limit allows
    (the cap protects nothing if descriptors run out first); warn when that does not fit."""
    try:
        import resource
    except ImportError:  # not a Unix
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max_connections + FD_HEADROOM
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft < want:
        log.warning("[api] max_connections = %d needs %d open files, but the limit is %d (hard limit %s): "
                    "descriptors may run out before the cap applies; raise the limit (ulimit -n, systemd "
                    "LimitNOFILE=, docker --ulimit nofile=) or lower max_connections",
                    max_connections, want, soft, "unlimited" if hard == resource.RLIM_INFINITY else hard)
