"""A real nginx for tests, and what stands around it: the collector as a process, a small upstream, and a
test double of the decision endpoint.

* `Nginx` runs Debian's nginx (`/usr/sbin/nginx`, installed by `deploy/system-deps.sh test`) from a private
  prefix on free ports, in the foreground, from a config rendered by `gatewatch nginx-config`; it is stopped
  by its own pid (SIGQUIT, then SIGTERM, then SIGKILL), never as a system service. A missing nginx fails the
  test with the command that installs it; it never skips.
* Run as root (CI containers), nginx is started as `nobody` (`unprivileged()`), as it would run in production:
  the prefix is then a directory under /tmp that `nobody` owns, mode 0700 (`private_dir`).
* `CollectorProcess` runs `gatewatch collect` with the test's Kafka environment (as the test's own user: the
  interpreter may not be reachable for `nobody`) and stops it with SIGTERM. As root its socket is made
  writable for everyone, inside the private directory only `nobody` (and root) can enter.
* `Upstream` is the service nginx fronts; `DecisionDouble` is a **test double** standing in for gatewatch's
  decision endpoint (`gatewatch decide`): it answers by token from a table the test fills, records what nginx
  sent, and can be stopped to see the fail mode. It is not the decision service.

Reusable by any test (`from tests.nginx_helpers import ...`): tests/integration/test_nginx_gateway.py shows
the whole stack.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
NGINX_CANDIDATES = ("/usr/sbin/nginx",)
UNPRIVILEGED_USER = "nobody"


def nginx_binary() -> str:
    """The nginx executable: $GATEWATCH_NGINX when set (only that one), else `nginx` on PATH, else
    /usr/sbin/nginx. Fails the test (never skips) when there is none."""
    chosen = os.environ.get("GATEWATCH_NGINX")
    if chosen is not None:
        found = chosen if os.access(chosen, os.X_OK) else None
    else:
        found = shutil.which("nginx") or next((p for p in NGINX_CANDIDATES if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.fail(f"nginx is not installed{f' at GATEWATCH_NGINX={chosen}' if chosen else ''}: "
                    "`deploy/system-deps.sh test` installs it (Debian: sudo apt-get install -y nginx); "
                    "the nginx tests need the real server", pytrace=False)
    return found


def unprivileged() -> dict[str, Any]:
    """Popen arguments that drop root to `nobody` (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam(UNPRIVILEGED_USER)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


@contextlib.contextmanager
def private_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory the processes of `unprivileged()` can use: `tmp_path` itself when not root; as root, a fresh
    directory under /tmp owned by `nobody` (pytest's tmp_path is not reachable for it), removed afterwards."""
    if os.geteuid() != 0:
        yield tmp_path
        return
    pw = pwd.getpwnam(UNPRIVILEGED_USER)
    path = Path(tempfile.mkdtemp(prefix="gatewatch-nginx-"))
    os.chown(path, pw.pw_uid, pw.pw_gid)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def chown_tree(path: Path) -> None:
    """Hand `path` and everything under it to the user of `unprivileged()` (nothing when not root)."""
    kw = unprivileged()
    if kw:
        for p in [path, *path.rglob("*")]:
            os.chown(p, kw["user"], kw["group"])


class Nginx:
    """One nginx: `start(conf_text)` writes PREFIX/conf/nginx.conf, checks it with `nginx -t`, starts
    `nginx -p PREFIX -c conf/nginx.conf -e stderr` in the foreground (stderr to PREFIX/logs/stderr.log) and waits
    until `port` accepts connections; `stop()` ends it by its pid."""

    def __init__(self, prefix: Path, port: int) -> None:
        self.prefix, self.port = prefix, port
        self.binary = nginx_binary()
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = prefix / "logs" / "stderr.log"

    def _cmd(self, *extra: str) -> list[str]:
        return [self.binary, "-p", f"{self.prefix}/", "-c", "conf/nginx.conf", "-e", "stderr", *extra]

    def start(self, conf_text: str, timeout: float = 15.0) -> Nginx:
        for d in ("conf", "logs", "tmp"):
            (self.prefix / d).mkdir(parents=True, exist_ok=True)
        (self.prefix / "conf" / "nginx.conf").write_text(conf_text, encoding="utf-8")
        chown_tree(self.prefix)
        test = subprocess.run(self._cmd("-t", "-q"), capture_output=True, text=True, timeout=30, **unprivileged())
        assert test.returncode == 0, f"nginx -t refused the rendered config:\n{test.stderr}"
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(self._cmd(), stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         **unprivileged())

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited {self.proc.returncode}:\n{self.stderr()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
            return False

        wait_for(up, timeout, f"nginx on port {self.port}")
        return self

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace") if self.stderr_path.exists() else ""

    def stop(self, timeout: float = 10.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        for sig in (signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL):  # graceful, fast, final
            proc.send_signal(sig)
            try:
                return proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                continue
        return proc.wait()

    def __enter__(self) -> Nginx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def render_config(**kw: Any) -> str:
    """`gatewatch nginx-config` as a function (gatewatch/nginx_config.py)."""
    from gatewatch.nginx_config import NginxOptions, Route, render

    routes = tuple(r if isinstance(r, Route) else Route(*r) for r in kw.pop("routes", ()))
    return render(NginxOptions(routes=routes, **kw))


class CollectorProcess:
    """`gatewatch collect --listen LISTEN` (unix:/PATH or udp:HOST:PORT) as its own process; `stop()` sends
    SIGTERM and returns (exit code, JSON summary). Its stderr goes to `log` (kept for the token scan)."""

    def __init__(self, listen: str, env: dict[str, str], log: Path, *extra: str) -> None:
        self.listen, self.log = listen, log
        full_env = {**os.environ, **env, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(ROOT)}
        full_env.pop("GATEWATCH_CONFIG", None)
        if listen.startswith("unix:") and unprivileged():
            extra = ("--socket-mode", "666", *extra)  # nginx runs as nobody: the private directory keeps others out
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gatewatch.cli", "collect", "--listen", listen, *extra],
                cwd=log.parent, env=full_env, stdout=subprocess.PIPE, stderr=err)

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"gatewatch collect exited {self.proc.returncode}:\n{log.read_text()}")
            return f"listening on {listen}" in log.read_text(errors="replace")

        wait_for(ready, 60, "the collector to listen")

    def stop(self, timeout: float = 60.0) -> tuple[int, dict[str, Any]]:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=timeout)
        lines = out.decode().strip().splitlines()
        return self.proc.returncode, json.loads(lines[-1]) if lines else {}

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, handler: type[BaseHTTPRequestHandler], owner: Any) -> None:
        self.owner = owner
        self.connections: set[socket.socket] = set()
        super().__init__(("127.0.0.1", port), handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as nginx's upstream keepalive expects
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)


class _Service:
    handler: type[BaseHTTPRequestHandler]

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[dict[str, Any]] = []
        self.httpd = _Server(self.port, self.handler, self)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop answering: the listening socket and every kept-alive connection are closed, so nginx finds
        nothing there (connection refused)."""
        self.httpd.shutdown()
        self.httpd.server_close()
        for conn in list(self.httpd.connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()


class _UpstreamHandler(_Handler):
    def _any(self) -> None:
        body = self._body()
        self.server.owner.requests.append({"method": self.command, "path": self.path,
                                           "headers": dict(self.headers.items()), "body": body})
        self._send(200, {"Content-Type": "application/json"},
                   json.dumps({"ok": True, "path": self.path}).encode())

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _any


class Upstream(_Service):
    """The service nginx fronts: 200 with a small JSON body for anything; records each request."""

    handler = _UpstreamHandler


class _DecisionHandler(_Handler):
    def do_GET(self) -> None:
        owner: DecisionDouble = self.server.owner
        owner.requests.append({"method": self.command, "path": self.path, "version": self.request_version,
                               "headers": list(self.headers.items())})
        auth = self.headers.get("Authorization") or ""
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        verdict = owner.verdicts.get(token, owner.default)
        if verdict == "hang":
            time.sleep(owner.hang_seconds)
            verdict = "allow"
        if verdict == "error":
            self._send(500, {})
            return
        status, headers = DecisionDouble.ANSWERS[verdict]
        self._send(status, headers)


class DecisionDouble(_Service):
    """TEST DOUBLE of the decision endpoint (`gatewatch decide`, built elsewhere): answers
    `GET /v1/decision` by the bearer token's entry in `verdicts` — "allow" (204), "deny" (403), "step_up"
    (401 with WWW-Authenticate), "hang" (answers after `hang_seconds`: nginx's timeout fires first), "error"
    (500) — with X-Gatewatch-* headers, and records every request (method, path, HTTP version, headers)."""

    handler = _DecisionHandler
    ANSWERS = {
        "allow": (204, {"X-Gatewatch-Risk": "5", "X-Gatewatch-Action": "allow"}),
        "deny": (403, {"X-Gatewatch-Risk": "92", "X-Gatewatch-Action": "deny",
                       "X-Gatewatch-Reason": "token replayed from another network"}),
        "step_up": (401, {"X-Gatewatch-Risk": "55", "X-Gatewatch-Action": "step_up",
                          "X-Gatewatch-Reason": "risk above step-up threshold",
                          "WWW-Authenticate": 'Bearer error="insufficient_user_authentication"'}),
    }

    def __init__(self, verdicts: dict[str, str] | None = None, default: str = "allow",
                 hang_seconds: float = 2.0) -> None:
        self.verdicts = dict(verdicts or {})
        self.default, self.hang_seconds = default, hang_seconds
        super().__init__()


def files_containing(root: Path, needles: list[bytes]) -> list[str]:
    """Files under `root` that contain any of `needles` (what a raw token must never be in)."""
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            hits += [f"{path}: {needle[:12]!r}..." for needle in needles if needle in data]
    return hits
