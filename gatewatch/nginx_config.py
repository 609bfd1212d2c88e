"""`gatewatch nginx-config`: the nginx configuration that puts gatewatch in front of an upstream.

Rendered from arguments (and `[limits] max_token_bytes`), not copied from a template with placeholders:
every value that lands in the file is checked against a strict character set first (a tenant, path or
address cannot inject a directive), the fail mode changes several blocks at once, and the output is one
complete file that `nginx -t` accepts (tests/gatewatch/test_nginx_config.py runs it on every variant).
`deploy/nginx/gatewatch.conf.example` is this module's output for the README's example; a test keeps
the two equal.

What the file does (README "Put gatewatch in front of your gateway"):

* every request of a routed location asks the decision endpoint first (`auth_request` to an internal
  location that proxies to `http://DECISION/v1/decision` over kept-alive HTTP/1.1 connections, without
  the body, with exactly the headers of `DECISION_HEADERS`); 2xx lets it through, 401 and 403 are the
  client's answer (401 with the decision's `WWW-Authenticate`); the decision's `X-Gatewatch-Risk`,
  `-Action` and `-Reason` are copied onto every response;
* the decision unreachable, timed out or answering 5xx: `open` lets the request through, `closed`
  answers `fail_status` (503 with `Retry-After`, or 403);
* `$remote_addr` is the client named by `X-Forwarded-For` only when the hop in front is a trusted proxy;
* the access log is one JSON object per request (CONTRACT.md §1 fields; `gatewatch collect` finishes
  the shape) sent only to the collector's syslog socket: no access log file, so raw bearer tokens
  never reach the disk. The error log goes to stderr and never holds a request header (its lines quote
  the request line, so a token sent in the query string would be there);
* it runs unprivileged from a prefix directory: `nginx -p PREFIX -c conf/nginx.conf -e stderr`, in the
  foreground, with its pid file and temporary files under PREFIX.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass

from ingest.errors import ConfigError

FAIL_MODES = ("open", "closed")
FAIL_STATUSES = (503, 403)

# What the decision endpoint receives (header → nginx value); nothing else of the client's request.
DECISION_HEADERS = (
    ("Authorization", "$http_authorization"),
    ("User-Agent", "$http_user_agent"),
    ("X-Request-Nonce", "$http_x_request_nonce"),
    ("X-Request-ID", "$request_id"),
    ("X-Original-Method", "$request_method"),
    ("X-Original-URI", "$request_uri"),
    ("X-Gatewatch-Tenant", "$gatewatch_tenant"),
    ("X-Gatewatch-Route", "$gatewatch_route"),
    ("X-Forwarded-For", "$remote_addr"),
)
COPIED_HEADERS = ("X-Gatewatch-Risk", "X-Gatewatch-Action", "X-Gatewatch-Reason")

# The log line, field by field (ingest/syslog.py turns it into the contract's access event).
LOG_FIELDS = (
    ("event_id", "$request_id"), ("msec", "$msec"), ("gateway", None), ("tenant", "$gatewatch_tenant"),
    ("client_ip", "$remote_addr"), ("method", "$request_method"), ("path", "$gatewatch_path"),
    ("status", "$status"), ("route", "$gatewatch_route"), ("request_time", "$request_time"),
    ("bytes_in", "$request_length"), ("bytes_out", "$bytes_sent"), ("user_agent", "$http_user_agent"),
    ("token", "$gatewatch_token"), ("nonce", "$http_x_request_nonce"),
)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")  # tenant, route, gateway
_PATH = re.compile(r"/[A-Za-z0-9._~%/-]{0,255}")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})")
_SOCKET = re.compile(r"/[A-Za-z0-9._/-]{1,100}")  # sun_path holds 108 bytes
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_TAG = re.compile(r"[A-Za-z0-9_]{1,32}")


@dataclass(frozen=True)
class Route:
    path: str  # a prefix location
    tenant: str
    route: str = ""


@dataclass(frozen=True)
class NginxOptions:
    upstream: str  # HOST:PORT
    decision: str  # HOST:PORT of the decision endpoint
    collector: str  # unix:/abs/path or udp:HOST:PORT (what `gatewatch collect --listen` is given)
    fail: str  # open | closed
    listen: str = "8000"  # PORT, HOST:PORT or [V6]:PORT
    fail_status: int = 503  # closed: what the client gets
    routes: tuple[Route, ...] = ()
    default_tenant: str = "default"  # requests outside every route (404s, nginx's own 400s)
    gateway: str | None = None  # the events' `gateway`; None: nginx's $hostname
    trusted_proxies: tuple[str, ...] = ()  # CIDRs, or "unix:"
    workers: str = "auto"
    tag: str = "gatewatch"
    connect_timeout_ms: int = 100
    read_timeout_ms: int = 250
    user: str | None = None  # `user` directive, for a master started as root
    max_token_bytes: int = 16_384  # [limits] max_token_bytes: the header buffer must hold such a token


def parse_route(text: str) -> Route:
    """`PATH=TENANT[:ROUTE]` (the `--route` argument)."""
    path, sep, rest = text.partition("=")
    tenant, _, route = rest.partition(":")
    if not sep:
        raise ConfigError(f"--route must be PATH=TENANT[:ROUTE], got {text[:80]!r}")
    return Route(path=path, tenant=tenant, route=route)


def _check(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.fullmatch(value):
        raise ConfigError(f"{what}: {value[:80]!r} has characters nginx-config does not accept ({pattern.pattern})")
    return value


def host_port(value: str, what: str) -> str:
    """HOST:PORT (IPv6 in brackets) → the same, checked."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what} must be HOST:PORT, got {value[:80]!r}")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ConfigError(f"{what}: {host[:80]!r} is not an IPv6 address") from None
    else:
        _check(_HOST, host, what)
    return f"{host}:{int(port)}"


def _listen(value: str) -> str:
    if value.isdigit():
        if not 0 < int(value) < 65536:
            raise ConfigError(f"--listen: port {value} out of range")
        return str(int(value))
    return host_port(value, "--listen")


def _syslog_server(collector: str) -> str:
    scheme, _, where = collector.partition(":")
    if scheme == "unix":
        return "unix:" + _check(_SOCKET, where, "--collector unix:PATH (absolute)")
    if scheme == "udp":
        return host_port(where, "--collector udp:HOST:PORT")
    raise ConfigError(f"--collector must be unix:/PATH or udp:HOST:PORT, got {collector[:80]!r}")


def _trusted(value: str) -> str:
    if value == "unix:":
        return value
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ConfigError(f"--trusted-proxy: {value[:80]!r} is not an address or CIDR") from None


def check(o: NginxOptions) -> NginxOptions:
    """Every value checked; raises ConfigError naming the argument."""
    if o.fail not in FAIL_MODES:
        raise ConfigError(f"--fail must be open or closed, got {o.fail!r}")
    if o.fail_status not in FAIL_STATUSES:
        raise ConfigError(f"--fail-status must be 503 or 403, got {o.fail_status}")
    if not (o.workers == "auto" or (o.workers.isdigit() and 0 < int(o.workers) <= 1024)):
        raise ConfigError(f"--workers must be auto or 1..1024, got {o.workers!r}")
    if not 1 <= o.connect_timeout_ms <= 10_000 or not 1 <= o.read_timeout_ms <= 60_000:
        raise ConfigError("decision timeouts: connect 1..10000 ms, read 1..60000 ms")
    _check(_NAME, o.default_tenant, "--default-tenant")
    _check(_TAG, o.tag, "--tag")
    if o.gateway is not None:
        _check(_NAME, o.gateway, "--gateway")
    if o.user is not None:
        _check(_USER, o.user, "--user")
    seen: set[str] = set()
    for r in o.routes:
        _check(_PATH, r.path, "--route PATH")
        _check(_NAME, r.tenant, "--route TENANT")
        if r.route:
            _check(_NAME, r.route, "--route ROUTE")
        if r.path in seen:
            raise ConfigError(f"--route: {r.path} given twice")
        seen.add(r.path)
    return o


def render(o: NginxOptions) -> str:
    check(o)
    syslog = _syslog_server(o.collector)
    gateway = o.gateway if o.gateway is not None else "$hostname"
    pairs = [f'"{name}":"{gateway if value is None else value}"' for name, value in LOG_FIELDS]
    fields = [",".join(pairs[i:i + 4]) for i in range(0, len(pairs), 4)]  # consecutive strings are joined
    header_kib = max(8, math.ceil((o.max_token_bytes + 512) / 1024))  # "Authorization: Bearer " + token
    routes = o.routes if any(r.path == "/" for r in o.routes) else (*o.routes, None)
    L: list[str] = []
    add = L.append
    add(f"# gatewatch in front of {host_port(o.upstream, '--upstream')}: rendered by `gatewatch nginx-config` "
        "(gatewatch/nginx_config.py).")
    add("# Run it unprivileged from a prefix directory (relative paths below are relative to it; create")
    add("# PREFIX/logs and PREFIX/tmp first):  nginx -p PREFIX -c conf/nginx.conf -e stderr")
    add(f"# Fail mode: {o.fail} — the decision endpoint unreachable, timed out or answering 5xx " +
        ("lets the request through." if o.fail == "open" else f"answers {o.fail_status}."))
    add("")
    if o.user:
        add(f"user {o.user};")
    add("daemon off;  # in the foreground: stop it with SIGQUIT (graceful) or SIGTERM")
    add(f"worker_processes {o.workers};")
    add("pid logs/nginx.pid;")
    add("# The error log never holds a request header (bearer tokens ride in Authorization); its lines quote the")
    add("# request line, query string included.")
    add("error_log stderr warn;")
    add("")
    add("events {")
    add("    worker_connections 1024;")
    add("}")
    add("")
    add("http {")
    add("    # Temporary files in the prefix (the packaged defaults under /var/lib/nginx need root).")
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        add(f"    {kind}_temp_path tmp/{kind};")
    add("    server_tokens off;")
    add(f"    large_client_header_buffers 4 {header_kib}k;  # a token of [limits] max_token_bytes fits")
    add("")
    if o.trusted_proxies:
        add("    # $remote_addr is the client named by X-Forwarded-For only when the hop in front is trusted.")
        for cidr in o.trusted_proxies:
            add(f"    set_real_ip_from {_trusted(cidr)};")
        add("    real_ip_header X-Forwarded-For;")
        add("    real_ip_recursive on;")
    else:
        add("    # No trusted proxies: $remote_addr is the TCP peer and X-Forwarded-For is never believed.")
    add("")
    add("    # Tenant and route of the request: each routed location sets them; the rest get the defaults.")
    add(f'    map $server_port $gatewatch_tenant {{ default "{o.default_tenant}"; }}')
    add('    map $server_port $gatewatch_route { default ""; }')
    add("    # The bearer token without its scheme (\"\" without one).")
    add("    map $http_authorization $gatewatch_token {")
    add('        default "";')
    add('        "~*^bearer[ \\t]+([^ \\t]+)[ \\t]*$" $1;')
    add("    }")
    add("    # The path as the client sent it, without the query string (it may hold secrets).")
    add("    map $request_uri $gatewatch_path {")
    add('        default "";')
    add('        "~^([^?]*)" $1;')
    add("    }")
    add("")
    add("    # One JSON object per request, CONTRACT.md §1's access event once `gatewatch collect` has turned")
    add("    # msec/request_time into ts/latency_ms, strings into numbers and dropped empty optional fields.")
    add("    log_format gatewatch escape=json")
    for i, chunk in enumerate(fields):
        start = '{"kind":"access",' if i == 0 else ","
        end = "}';" if i == len(fields) - 1 else "'"
        add(f"        '{start}{chunk}{end}")
    add("    # Only to the collector's socket: no access log file, so raw bearer tokens never reach the disk.")
    add(f"    access_log syslog:server={syslog},tag={o.tag},nohostname gatewatch;")
    add("")
    add("    upstream gatewatch_decision {")
    add(f"        server {host_port(o.decision, '--decision')};")
    add("        keepalive 32;")
    add("    }")
    add("    upstream gatewatch_upstream {")
    add(f"        server {host_port(o.upstream, '--upstream')};")
    add("        keepalive 32;")
    add("    }")
    add("")
    add("    server {")
    add(f"        listen {_listen(o.listen)};")
    add("        server_name _;")
    add("")
    add("        # Every location asks the decision endpoint first, unless it says `auth_request off`.")
    add("        auth_request /_gatewatch/decision;")
    for name in COPIED_HEADERS:
        var = "$gatewatch_" + name.rsplit("-", 1)[1].lower()
        add(f"        auth_request_set {var} $upstream_http_{name.lower().replace('-', '_')};")
    for name in COPIED_HEADERS:
        add(f"        add_header {name} $gatewatch_{name.rsplit('-', 1)[1].lower()} always;")
    if o.fail == "closed":
        add("        # Fail closed: auth_request turns a failed decision into 500, answered here instead.")
        add("        error_page 500 = @gatewatch_fail_closed;")
    add("        proxy_http_version 1.1;")
    add('        proxy_set_header Connection "";')
    add("        proxy_set_header Host $host;")
    add("        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;")
    add("        proxy_set_header X-Request-ID $request_id;")
    add("")
    add("        location = /_gatewatch/decision {")
    add("            internal;")
    add("            auth_request off;")
    add("            proxy_pass http://gatewatch_decision/v1/decision;")
    add("            proxy_http_version 1.1;")
    add('            proxy_set_header Connection "";')
    add("            proxy_pass_request_body off;")
    add('            proxy_set_header Content-Length "";')
    add("            proxy_pass_request_headers off;  # exactly these:")
    for name, value in DECISION_HEADERS:
        add(f"            proxy_set_header {name} {value};")
    add(f"            proxy_connect_timeout {o.connect_timeout_ms}ms;")
    add(f"            proxy_send_timeout {o.read_timeout_ms}ms;")
    add(f"            proxy_read_timeout {o.read_timeout_ms}ms;")
    if o.fail == "open":
        add("            # Fail open: unreachable, timed out or 5xx → 204, and the request goes through.")
        add("            proxy_intercept_errors on;")
        add("            error_page 500 502 503 504 = @gatewatch_fail_open;")
    add("        }")
    if o.fail == "open":
        add("        location @gatewatch_fail_open {")
        add("            return 204;")
        add("        }")
    else:
        add("        location @gatewatch_fail_closed {")
        if o.fail_status == 503:
            add("            add_header Retry-After 5 always;")
        add(f"            return {o.fail_status};")
        add("        }")
    for r in routes:
        add("")
        if r is None:
            add("        location / {  # outside every route: not proxied")
            add("            return 404;")
            add("        }")
            continue
        add(f"        location {r.path} {{")
        add(f'            set $gatewatch_tenant "{r.tenant}";')
        add(f'            set $gatewatch_route "{r.route}";')
        add("            proxy_pass http://gatewatch_upstream;")
        add("        }")
    add("    }")
    add("}")
    return "\n".join(L) + "\n"
