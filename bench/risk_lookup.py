"""Risk look-up, the gateway's hot path: `GET /v1/risk?sub=...&ip=...` over HTTP, beside a bare ASGI endpoint.

Two targets, each served the way `gatewatch serve` serves: one uvicorn worker process on 127.0.0.1,
`uvicorn.run(app, host, port, log_level="warning")` with uvicorn's defaults, started as a subprocess so the
load generator and the server never share a GIL:

  * gatewatch  `python -m gatewatch.cli serve` on a file-backed store (SQLite, WAL) seeded with --rows risk
               rows, asked with the gateway's API key (scope risk:read, every tenant)
  * bare       a minimal `async def app(scope, receive, send)` answering a fixed small JSON body (the same
               bytes as gatewatch's "no match" answer) — the ceiling set by uvicorn, HTTP and this client

The load generator is the asyncio HTTP/1.1 client below (raw streams, keep-alive, one request in flight
per connection; `wrk` is not used even when installed, so the key mix is identical everywhere):

  * closed loop: --connections connections sending back to back for --duration s, --repeat times (the
                median run is reported with the range): max throughput, p50/p99
  * open loop:  each of --rates requests/s on a fixed schedule for --open-duration s over --open-connections
                connections; latency runs from each request's *scheduled* send time, so a stalled server
                is charged for the requests it delayed (no coordinated omission)
  * cold pass (gatewatch only): right after start, --cold-requests requests whose keys were never asked
                before, so every look-up misses the in-process risk cache and reads SQLite

Keys: each request names a subject and an IP. --present of them exist in the risk table, the rest do not;
within each group popularity is Zipf (s = --zipf) over a shuffled key list. A client-side model of the
store's risk cache (a dict of (kind, value) keys, cleared when full) estimates the hit ratio per phase.
Every response must be 200; every --check-every-th body is parsed and its score, action and entity count
compared with the seeded table (bare: the exact fixed body). Any error fails the run (exit 1).

Server CPU (from /proc) is reported beside throughput, and this client's own CPU, to show which side set a
ceiling; `--pin` puts the server on core 0 and the client on core 1 (off by default: with other work on
the machine, a pinned server cannot move away from it).

Usage: .venv/bin/python bench/risk_lookup.py [--rows 100000] [--duration 10] [--rates 500,1000] ...
Prints the figures and rewrites the "Risk look-up" section of BENCHMARKS.md (not with --no-write).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BARE_BODY = b'{"score":0.0,"level":"low","action":"allow","reasons":[],"entities":[],"as_of":null}'
TENANTS = ("acme", "globex", "initech", "umbrella", "hooli", "soylent", "stark", "wayne")
CACHE_MAX_DEFAULT = 100_000  # the store's risk-cache capacity (api.risk_table._RISK_CACHE_MAX), if not importable


# -- the baseline server ---------------------------------------------------------------------------
async def bare_app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """A fixed small JSON answer to any HTTP request; nothing else."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(BARE_BODY)).encode())]})
    await send({"type": "http.response.body", "body": BARE_BODY})


def serve_bare(port: int) -> int:
    from gatewatch.server import serve

    # the same server `gatewatch serve` runs the API on (default header timeout and connection cap)
    serve(bare_app, host="127.0.0.1", port=port, header_timeout=10.0, max_connections=1000)
    return 0


# -- the risk table and the request mix ------------------------------------------------------------
def action_for(score: float) -> str:
    return "deny" if score >= 75 else "step_up" if score >= 40 else "allow"


def level_for(score: float) -> str:
    return "high" if score >= 75 else "medium" if score >= 40 else "low"


def subject(i: int) -> str:
    return f"user-{i:06d}@example.com"


def ghost_subject(i: int) -> str:
    return f"ghost-{i:06d}@example.com"


def ipv4(prefix: tuple[int, int], i: int) -> str:
    return f"{prefix[0]}.{prefix[1] + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"


@dataclass
class Table:
    """The seeded risk rows: scores by entity value (one tenant each)."""

    subjects: list[str]
    ips: list[str]
    score: dict[str, float]  # subject or ip value -> score


def make_table(rows: int, rng: np.random.Generator) -> tuple[Table, list[Any]]:
    from scoring.risk import RiskUpdate

    n_sub = rows * 6 // 10
    subjects = [subject(i) for i in range(n_sub)]
    ips = [ipv4((10, 0), i) for i in range(rows - n_sub)]
    band = rng.random(rows)  # 70 % low, 20 % medium, 10 % high, like a risk table dominated by noise
    raw = np.where(band < 0.7, rng.uniform(1, 40, rows), np.where(band < 0.9, rng.uniform(40, 75, rows),
                                                                  rng.uniform(75, 100, rows)))
    scores = np.round(raw, 1)
    tenants = rng.integers(0, len(TENANTS), rows)
    reasons_pool = ("token.invalid: 14 failures in 60 s", "replay.nonce: nonce seen twice",
                    "traffic.rate_limit: 3x the limit", "anomaly.behaviour: unusual routes",
                    "token.revoked_use: revoked token presented")
    updates, score = [], {}
    t0 = 1_795_000_000.0
    for i, value in enumerate(subjects + ips):
        kind = "subject" if i < n_sub else "ip"
        s = float(scores[i])
        k = 1 + i % 3
        reasons = tuple(reasons_pool[(i + j) % len(reasons_pool)] for j in range(k))
        updates.append(RiskUpdate(kind, value, TENANTS[int(tenants[i])], s, level_for(s), action_for(s),
                                  reasons, t0 + i))
        score[value] = s
    return Table(subjects, ips, score), updates


class Zipf:
    """Draw items of a list with Zipf(s) popularity over a random ranking of the list."""

    def __init__(self, items: list[str], s: float, rng: np.random.Generator) -> None:
        self.items = [items[i] for i in rng.permutation(len(items))]
        weights = 1.0 / np.arange(1, len(items) + 1) ** s
        self.cdf = np.cumsum(weights) / weights.sum()
        self.rng = rng

    def draw(self, n: int) -> list[str]:
        idx = np.minimum(np.searchsorted(self.cdf, self.rng.random(n)), len(self.items) - 1)
        return [self.items[i] for i in idx]


@dataclass
class CacheModel:
    """A client-side model of the store's risk cache: a key set cleared when it reaches `capacity`."""

    capacity: int
    keys: set[tuple[str, str]] = field(default_factory=set)
    hits: int = 0
    misses: int = 0
    clears: int = 0

    def touch(self, key: tuple[str, str]) -> None:
        if key in self.keys:
            self.hits += 1
            return
        self.misses += 1
        if len(self.keys) >= self.capacity:
            self.keys.clear()
            self.clears += 1
        self.keys.add(key)

    def snapshot(self) -> tuple[int, int, int]:
        return self.hits, self.misses, self.clears


@dataclass
class Request:
    data: bytes
    keys: tuple[tuple[str, str], tuple[str, str]]  # the look-up keys, for the cache model
    expect: tuple[float, int] | None  # (score, entity count); None = the bare body


class Mix:
    """The request stream for one target: subject + IP per request, --present of each in the table."""

    def __init__(self, table: Table, *, present: float, s: float, seed: int, host: str, key: str | None) -> None:
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.table, self.present, self.host, self.key = table, present, host, key
        self.sub_hot = Zipf(table.subjects, s, rng)
        self.ip_hot = Zipf(table.ips, s, rng)
        self.sub_absent = Zipf([ghost_subject(i) for i in range(len(table.subjects) // 2)], s, rng)
        self.ip_absent = Zipf([ipv4((172, 16), i) for i in range(len(table.ips) // 2)], s, rng)

    def request(self, sub: str, ip: str) -> Request:
        auth = f"Authorization: Bearer {self.key}\r\n" if self.key else ""
        data = (f"GET /v1/risk?sub={quote(sub, safe='')}&ip={quote(ip, safe='')} HTTP/1.1\r\n"
                f"Host: {self.host}\r\n{auth}\r\n").encode()
        keys = (("subject", sub), ("ip", ip))
        if self.key is None:
            return Request(data, keys, None)
        found = [self.table.score[v] for v in (sub, ip) if v in self.table.score]
        return Request(data, keys, (max(found, default=0.0), len(found)))

    def zipf(self, n: int) -> list[Request]:
        present = self.rng.random((n, 2)) < self.present
        subs_hot, subs_absent = self.sub_hot.draw(n), self.sub_absent.draw(n)
        ips_hot, ips_absent = self.ip_hot.draw(n), self.ip_absent.draw(n)
        return [self.request(subs_hot[i] if present[i, 0] else subs_absent[i],
                             ips_hot[i] if present[i, 1] else ips_absent[i]) for i in range(n)]

    def first_seen(self, n: int, offset: int) -> list[Request]:
        """n requests whose subject and IP were never asked before (keys from `offset` on, by index)."""
        present = self.rng.random((n, 2)) < self.present
        subs = [self.table.subjects[i] for i in self.rng.permutation(len(self.table.subjects))]
        ips = [self.table.ips[i] for i in self.rng.permutation(len(self.table.ips))]
        out = []
        for i in range(n):
            j = offset + i
            out.append(self.request(subs[j % len(subs)] if present[i, 0] else f"cold-{j:07d}@example.com",
                                    ips[j % len(ips)] if present[i, 1] else ipv4((192, 168), j)))
        return out

    def warmup(self, n: int) -> list[Request]:
        """Requests on keys used nowhere else (process warm-up without warming the measured keys)."""
        return [self.request(f"warmup-{i}@example.com", ipv4((100, 64), i)) for i in range(n)]


# -- the HTTP/1.1 client ---------------------------------------------------------------------------
class HttpError(Exception):
    pass


class Conn:
    """One keep-alive HTTP/1.1 connection with one request in flight."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> Conn:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
                break
        if length is None:
            raise HttpError("response without Content-Length")
        body = await self.reader.readexactly(length)
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass
            self.writer = self.reader = None


@dataclass
class Result:
    latencies: np.ndarray  # seconds
    elapsed: float
    errors: int
    checked: int
    examples: list[str]
    client_cpu: float  # CPU seconds of this process during the phase
    server_cpu: float  # CPU seconds of the server process during the phase
    cache: tuple[int, int, int] | None = None  # (hits, misses, clears) of the model during the phase

    @property
    def done(self) -> int:
        return len(self.latencies)

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if self.done else float("nan")


class Checker:
    def __init__(self, every: int) -> None:
        self.every, self.n, self.checked, self.errors = every, 0, 0, 0
        self.examples: list[str] = []

    def fail(self, what: str) -> None:
        self.errors += 1
        if len(self.examples) < 5:
            self.examples.append(what)

    def __call__(self, req: Request, status: int, body: bytes) -> None:
        self.n += 1
        if status != 200:
            self.fail(f"status {status}: {body[:200]!r}")
            return
        if self.n % self.every:
            return
        self.checked += 1
        if req.expect is None:
            if body != BARE_BODY:
                self.fail(f"bare body {body[:200]!r}")
            return
        try:
            got = json.loads(body)
        except ValueError:
            self.fail(f"not JSON: {body[:200]!r}")
            return
        score, count = req.expect
        if (abs(got.get("score", -1) - score) > 1e-9 or got.get("action") != action_for(score)
                or len(got.get("entities", ())) != count):
            self.fail(f"expected score {score} ({action_for(score)}, {count} entities), got {body[:300]!r}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


async def _open_all(host: str, port: int, n: int) -> list[Conn]:
    return list(await asyncio.gather(*(Conn(host, port).open() for _ in range(n))))


async def closed_loop(host: str, port: int, pid: int, requests: Iterator[Request], connections: int,
                      duration: float | None, check: Checker, cache: CacheModel | None) -> Result:
    """Back-to-back requests on `connections` connections, taken from `requests` (built beforehand, so no
    generation stalls) for `duration` s, or until it runs out. A shared iterator continues where the
    previous phase stopped."""
    conns = await _open_all(host, port, connections)
    before = cache.snapshot() if cache else None
    lat: list[float] = []
    errors_before, checked_before = check.errors, check.checked
    cpu0, scpu0 = time.process_time(), cpu_seconds(pid)
    start = time.perf_counter()
    deadline = start + duration if duration is not None else float("inf")

    async def worker(conn: Conn) -> None:
        while time.perf_counter() < deadline:
            req = next(requests, None)
            if req is None:
                return
            if cache is not None:
                cache.touch(req.keys[0])
                cache.touch(req.keys[1])
            t = time.perf_counter()
            try:
                status, body = await conn.request(req.data)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, HttpError, ValueError) as exc:
                check.fail(f"{type(exc).__name__}: {exc}")
                await conn.close()
                continue
            lat.append(time.perf_counter() - t)
            check(req, status, body)

    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - start
    cpu1, scpu1 = time.process_time(), cpu_seconds(pid)
    for c in conns:
        await c.close()
    return Result(np.array(lat), elapsed, check.errors - errors_before, check.checked - checked_before,
                  check.examples, cpu1 - cpu0, scpu1 - scpu0, _delta(cache, before))


async def open_loop(host: str, port: int, pid: int, requests: list[Request], rate: float, connections: int,
                    check: Checker, cache: CacheModel | None) -> Result:
    """`len(requests)` requests scheduled at `rate`/s; latency from each request's scheduled send time."""
    n = len(requests)
    conns = await _open_all(host, port, connections)
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    lat = np.full(n, np.nan)
    errors_before, checked_before = check.errors, check.checked
    before = cache.snapshot() if cache else None
    cpu0, scpu0 = time.process_time(), cpu_seconds(pid)
    t0 = time.perf_counter() + 0.05

    async def producer() -> None:
        for i in range(n):
            due = t0 + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            queue.put_nowait((i, due))
        for _ in conns:
            queue.put_nowait(None)

    async def worker(conn: Conn) -> None:
        while (item := await queue.get()) is not None:
            i, due = item
            if cache is not None:
                cache.touch(requests[i].keys[0])
                cache.touch(requests[i].keys[1])
            try:
                status, body = await conn.request(requests[i].data)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, HttpError, ValueError) as exc:
                check.fail(f"{type(exc).__name__}: {exc}")
                await conn.close()
                continue
            lat[i] = time.perf_counter() - due
            check(requests[i], status, body)

    await asyncio.gather(producer(), *(worker(c) for c in conns))
    elapsed = time.perf_counter() - t0
    cpu1, scpu1 = time.process_time(), cpu_seconds(pid)
    for c in conns:
        await c.close()
    return Result(lat[~np.isnan(lat)], elapsed, check.errors - errors_before, check.checked - checked_before,
                  check.examples, cpu1 - cpu0, scpu1 - scpu0, _delta(cache, before))


def _delta(cache: CacheModel | None, before: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
    if cache is None or before is None:
        return None
    after = cache.snapshot()
    return after[0] - before[0], after[1] - before[1], after[2] - before[2]


# -- servers ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, name: str, argv: list[str], port: int, ready_path: str, log: Path, cpu: int | None) -> None:
        self.name, self.port, self.log_path = name, port, log
        self._log = log.open("wb")
        preexec = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=preexec)
        self._wait(ready_path)

    def _wait(self, path: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} server exited with {self.proc.returncode}:\n"
                                 f"{self.log_path.read_text(errors='replace')[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                    if s.recv(12).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"{self.name} server not ready in {seconds:.0f}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# -- the run ---------------------------------------------------------------------------------------
@dataclass
class TargetRun:
    name: str
    closed_runs: list[Result]  # the repeated closed-loop runs; `closed` is the median one by throughput
    opened: list[tuple[float, Result]]  # (offered rate, result)
    cold: Result | None = None

    @property
    def closed(self) -> Result:
        return sorted(self.closed_runs, key=lambda r: r.done / r.elapsed)[len(self.closed_runs) // 2]

    def rps_range(self) -> str:
        rates = sorted(r.done / r.elapsed for r in self.closed_runs)
        return f"{rates[0]:,.0f}–{rates[-1]:,.0f}" if len(rates) > 1 else f"{rates[0]:,.0f}"

    def results(self) -> list[Result]:
        return [*self.closed_runs, *(r for _, r in self.opened), *([self.cold] if self.cold else [])]


def _phase(label: str, r: Result) -> None:
    cache = ""
    if r.cache is not None:
        hits, misses, clears = r.cache
        cache = f", cache model {hits / max(hits + misses, 1):.1%} hits, {clears} clears"
    print(f"  {label}: {r.done:,} in {r.elapsed:.1f}s = {r.done / r.elapsed:,.0f}/s, p50 {r.pct(50):.2f} ms, "
          f"p99 {r.pct(99):.2f} ms, max {r.pct(100):.1f} ms, errors {r.errors}, server CPU "
          f"{r.server_cpu / r.elapsed:.0%}, client CPU {r.client_cpu / r.elapsed:.0%}{cache}", flush=True)


async def run_target(name: str, server: Server, mix: Mix, args: argparse.Namespace,
                     cache: CacheModel | None) -> TargetRun:
    host, port, pid = "127.0.0.1", server.port, server.proc.pid
    check = Checker(args.check_every)
    print(f"{name}: pid {pid}, port {port}", flush=True)
    # Process warm-up (imports, thread pool, first-request paths) on keys asked nowhere else.
    await closed_loop(host, port, pid, iter(mix.warmup(args.warmup_requests)), 4, None, check, cache)
    cold = None
    if args.cold_requests and mix.key is not None:
        cold = await closed_loop(host, port, pid, iter(mix.first_seen(args.cold_requests, 0)), args.connections,
                                 None, check, cache)
        _phase("cold pass (every key new)", cold)
    # Built beforehand (enough for ~10k requests/s throughout), cycled if the server is faster than that;
    # the warm-up and the runs continue along the one stream.
    stream = itertools.cycle(mix.zipf(int(10_000 * (args.warmup_seconds + args.repeat * args.duration))))
    await closed_loop(host, port, pid, stream, args.connections, args.warmup_seconds, check, cache)
    closed_runs = []
    for i in range(args.repeat):
        closed_runs.append(await closed_loop(host, port, pid, stream, args.connections, args.duration, check, cache))
        _phase(f"closed loop {i + 1}/{args.repeat}, {args.connections} connections", closed_runs[-1])
    opened = []
    for rate in args.rates:
        await asyncio.sleep(1.0)  # let a backlog of the previous phase drain
        r = await open_loop(host, port, pid, mix.zipf(int(rate * args.open_duration)), rate,
                            args.open_connections, check, cache)
        _phase(f"open loop at {rate:,.0f}/s", r)
        opened.append((rate, r))
    if check.errors:
        print(f"  {check.errors} errors, e.g.: " + " | ".join(check.examples), flush=True)
    print(f"  {check.checked:,} bodies checked, {check.n:,} statuses checked", flush=True)
    return TargetRun(name, closed_runs, opened, cold)


def write_config(tmp: Path, keys: Path, db: Path) -> Path:
    cfg = tmp / "gatewatch.toml"
    cfg.write_text(f'[keys]\ndecryption_jwks = "{keys}/decryption.jwks.json"\nissuer_jwks = "{keys}/issuer.jwks.json"\n'
                   f'[store]\nurl = "sqlite:///{db}"\n'
                   f'[api]\njwks = "{keys}/api-issuer.jwks.json"\napi_keys = "{keys}/api-keys.json"\n')
    return cfg


def seed_store(db: Path, updates: list[Any]) -> float:
    from api.store import AlertStore

    t = time.perf_counter()
    store = AlertStore(str(db))
    for i in range(0, len(updates), 10_000):
        store.upsert_risk(updates[i:i + 10_000])
    store.close()
    return time.perf_counter() - t


def cache_capacity() -> int:
    try:
        from api import risk_table

        return int(getattr(risk_table, "_RISK_CACHE_MAX", CACHE_MAX_DEFAULT))
    except ImportError:
        return CACHE_MAX_DEFAULT


def report(args: argparse.Namespace, runs: dict[str, TargetRun], seed_s: float, pinned: bool, capacity: int,
           load: tuple[float, float]) -> str:
    gw, bare = runs["gatewatch"], runs["bare"]
    rows = args.rows

    def hit(r: Result) -> str:
        if r.cache is None:
            return "—"
        hits, misses, clears = r.cache
        return f"{hits / max(hits + misses, 1):.1%}" + (f" ({clears} clears)" if clears else "")

    def closed_row(label: str, r: Result, spread: str = "—") -> str:
        return (f"| {label} | {r.done:,} | {r.done / r.elapsed:,.0f} | {spread} | {r.pct(50):.2f} | {r.pct(99):.2f} | "
                f"{r.server_cpu / r.done * 1e6:,.0f} | {r.server_cpu / r.elapsed:.0%} | "
                f"{r.client_cpu / r.elapsed:.0%} | {hit(r)} |")

    def open_row(label: str, rate: float, r: Result) -> str:
        return (f"| {label} | {rate:,.0f} | {r.done / r.elapsed:,.0f} | {r.pct(50):.2f} | {r.pct(90):.2f} | "
                f"{r.pct(99):.2f} | {r.pct(100):.2f} | {r.errors} | {r.server_cpu / r.elapsed:.0%} | {hit(r)} |")

    lines = [f"Closed loop (max throughput): {args.connections} keep-alive connections sending back to back for "
             f"{args.duration:g} s after a {args.warmup_seconds:g} s warm-up, {args.repeat} times per target; the row "
             "is the median run by throughput (range: slowest–fastest run); latency per request.", "",
             "| target | requests | req/s | req/s range | p50 ms | p99 ms | server CPU µs/req | server CPU | "
             "client CPU | risk-cache hits (model) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
             closed_row("gatewatch `GET /v1/risk?sub=&ip=`, warm, Zipf key mix", gw.closed, gw.rps_range())]
    if gw.cold is not None:
        lines.append(closed_row("gatewatch, cold first pass: every key new (SQLite read per key)", gw.cold))
    lines += [closed_row(f"bare ASGI app, fixed {len(BARE_BODY)}-byte JSON body (baseline)", bare.closed,
                         bare.rps_range()), "",
              f"Open loop (fixed rate): requests on a fixed schedule for {args.open_duration:g} s over "
              f"{args.open_connections} connections; latency from each request's scheduled send time, so time "
              "spent queued behind a slow answer counts (no coordinated omission).", "",
              "| target | offered req/s | achieved req/s | p50 ms | p90 ms | p99 ms | max ms | errors | "
              "server CPU | risk-cache hits (model) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for (rate, g), (_, b) in zip(gw.opened, bare.opened, strict=True):
        lines += [open_row("gatewatch `GET /v1/risk`", rate, g), open_row("bare ASGI app (baseline)", rate, b)]
    checked = sum(r.checked for target in runs.values() for r in target.results())
    total = sum(r.done for target in runs.values() for r in target.results())
    uv = ", ".join(f"{p} {metadata.version(p)}" for p in ("uvicorn", "starlette", "h11"))
    extras = [p for p in ("uvloop", "httptools") if _installed(p)]
    lines += [
        "",
        f"Store: file-backed SQLite (WAL) seeded with {rows:,} risk rows ({rows * 6 // 10:,} subjects, "
        f"{rows - rows * 6 // 10:,} IPs, one of 8 tenants each; seeding took {seed_s:.1f} s). Each request names a "
        f"subject and an IP, each present in the table with probability {args.present:.0%}; within present and "
        f"absent keys popularity is Zipf (s = {args.zipf:g}) over a shuffled list, so popular keys stay cached and "
        f"the tail misses. Cache hits are a client-side model of the store's cache ({capacity:,} keys, cleared when "
        "full, absent keys cached too), not read from the server. The cold pass is the server process's first "
        f"look-ups ({args.cold_requests:,} requests, after {args.warmup_requests} warm-up requests on unrelated keys).",
        "",
        f"Checks: all {total:,} measured responses were 200, and {checked:,} sampled bodies (every "
        f"{args.check_every}th) matched the seeded table (score, action, entity count) or the fixed body.",
        "",
        "Servers: one uvicorn worker process each on 127.0.0.1, started like `gatewatch serve` "
        f"(`uvicorn.run(app, host, port, log_level=\"warning\")`; {uv}; "
        + (f"with {', '.join(extras)}" if extras else "no uvloop or httptools installed, so the asyncio loop and h11")
        + "). gatewatch is `python -m gatewatch.cli serve`, asked with the gateway's API key (risk:read, every "
        "tenant). Server CPU is the server process's user + system time (all threads) per request and per second.",
        "",
        "Load generator: this script's asyncio HTTP/1.1 client (raw streams, keep-alive, one request in flight per "
        f"connection) in its own process{'; `wrk` is not installed' if not _which('wrk') else ''}. The machine has "
        f"{os.cpu_count()} cores, shared by server and client"
        + ("; the server was pinned to core 0 and the client to core 1." if pinned else
           " (not pinned); client CPU well under 100 % means the client did not set the ceiling.")
        + f" 1-minute load average {load[0]:.2f} before the run and {load[1]:.2f} after it (other work on the "
        "machine competes for the same cores).",
        "",
        f"Command: `.venv/bin/python bench/risk_lookup.py --rows {rows} --duration {args.duration:g} --repeat {args.repeat} "
        f"--rates {','.join(f'{r:g}' for r in args.rates)} --open-duration {args.open_duration:g} "
        f"--connections {args.connections} --open-connections {args.open_connections} "
        f"--cold-requests {args.cold_requests}{' --pin' if pinned else ''}`.",
    ]
    return "\n".join(lines)


def _installed(pkg: str) -> bool:
    try:
        metadata.version(pkg)
        return True
    except metadata.PackageNotFoundError:
        return False


def _which(cmd: str) -> bool:
    return any(os.access(os.path.join(d, cmd), os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep) if d)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000, help="risk rows to seed")
    ap.add_argument("--connections", type=int, default=16, help="closed-loop connections")
    ap.add_argument("--duration", type=float, default=10.0, help="closed-loop seconds per run")
    ap.add_argument("--repeat", type=int, default=3, help="closed-loop runs per target (the median is reported)")
    ap.add_argument("--rates", default="500,1000", help="open-loop requests/s, comma-separated")
    ap.add_argument("--open-duration", type=float, default=10.0, help="open-loop seconds per target")
    ap.add_argument("--open-connections", type=int, default=64, help="open-loop connections")
    ap.add_argument("--cold-requests", type=int, default=20_000, help="first-pass requests on never-asked keys")
    ap.add_argument("--warmup-requests", type=int, default=500)
    ap.add_argument("--warmup-seconds", type=float, default=2.0)
    ap.add_argument("--present", type=float, default=0.9, help="share of keys that exist in the risk table")
    ap.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of key popularity")
    ap.add_argument("--check-every", type=int, default=16, help="parse and check every n-th body")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--pin", action="store_true", help="pin the server to core 0 and this client to core 1")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    ap.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_bare:
        return serve_bare(args.serve_bare)
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="gw-risk-bench-"))
    try:
        return run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> int:
    from bench.report import machine_header, write_section
    from gatewatch.keys import generate_keys

    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        print(f"warning: 1-minute load average is {load_before:.2f}: other work competes for the cores",
              file=sys.stderr)
    pinned = args.pin and (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")
    if pinned:
        os.sched_setaffinity(0, {1})
    keys, db = tmp / "keys", tmp / "risk.db"
    generate_keys(keys)
    gateway_key = json.loads((keys / "credentials.json").read_text())["gateway"]
    table, updates = make_table(args.rows, np.random.default_rng(args.seed))
    seed_s = seed_store(db, updates)
    print(f"seeded {len(updates):,} risk rows in {seed_s:.1f}s ({db})", flush=True)
    cfg = write_config(tmp, keys, db)
    capacity = cache_capacity()
    runs: dict[str, TargetRun] = {}
    server_core = 0 if pinned else None
    for name in ("gatewatch", "bare"):
        port = free_port()
        if name == "gatewatch":
            argv = [sys.executable, "-m", "gatewatch.cli", "serve", "--config", str(cfg), "--bind", f"127.0.0.1:{port}"]
            ready, key, cache = "/healthz", gateway_key, CacheModel(capacity)
        else:
            argv = [sys.executable, str(Path(__file__).resolve()), "--serve-bare", str(port)]
            ready, key, cache = "/", None, None
        server = Server(name, argv, port, ready, tmp / f"{name}.log", server_core)
        try:
            mix = Mix(table, present=args.present, s=args.zipf, seed=args.seed + 1, host=f"127.0.0.1:{port}",
                      key=key)
            runs[name] = asyncio.run(run_target(name, server, mix, args, cache))
        finally:
            server.stop()
    errors = sum(r.errors for target in runs.values() for r in target.results())
    text = report(args, runs, seed_s, pinned, capacity, (load_before, os.getloadavg()[0]))
    header = machine_header()
    print(header)
    print(text)
    if errors:
        print(f"FAILED: {errors} errors; BENCHMARKS.md left alone", file=sys.stderr)
        return 1
    if not args.no_write:
        write_section(ROOT / "BENCHMARKS.md", "Risk look-up", header + "\n\n" + text)
        print(json.dumps({"written": str(ROOT / "BENCHMARKS.md")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
