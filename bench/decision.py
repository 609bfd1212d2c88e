"""The gateway decision under load: `gatewatch decide`, and nginx with and without `auth_request` to it.

Three targets, each driven open-loop at --rate requests/s for --duration s over --connections keep-alive
connections by bench/openloop.c, compiled with the machine's C compiler (a Python asyncio client's own p99
latency was larger than what it measured) — latency
from each request's *scheduled* send time, so a stall is charged for every request it delayed:

  * nginx         nginx (Debian's package, one worker) serving the route without `auth_request`: the baseline
  * nginx+decide  the same route in the same nginx, behind `auth_request` to `gatewatch decide` — the
                  configuration `gatewatch nginx-config` renders (kept-alive upstream, fail open)
  * decide        `GET /v1/decision` straight to `gatewatch decide`: the decision alone, as nginx asks it

The upstream is a location of the same nginx answering 200 with a fixed body, so the difference between the
first two is what asking gatewatch costs a request. The store is seeded with --tokens token rows (a tenth
of them held, as revoked tokens are) and risk rows for their subjects and for client addresses; requests
pick a seeded token (allowed, stepped up, denied) or an unknown one, and every status is checked against
what the seeded rows say. Any wrong status fails the run (exit 1).

Usage: .venv/bin/python bench/decision.py [--rate 2000] [--duration 20] [--tokens 100000] [--no-write]
Prints the figures and rewrites the "Gateway decision" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import machine_header, write_section  # noqa: E402
from bench.risk_lookup import cpu_seconds, free_port  # noqa: E402

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@dataclass
class Ask:
    data: bytes  # the HTTP request
    expect: int  # the status the seeded store makes right


def _tfp(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def seed(db: Path, n: int, rng: random.Random) -> list[tuple[str, int]]:
    """Token rows, holds and risk rows in a fresh store; returns (token, expected decision status) pairs."""
    from api.store import AlertStore
    from scoring.holds import Hold, TokenSeen
    from scoring.risk import RiskUpdate

    store = AlertStore(str(db))
    now = time.time()
    tokens, seen, holds, risk = [], [], [], []
    for i in range(n):
        token = f"eyJ{rng.getrandbits(256):064x}.{i}.{rng.getrandbits(128):032x}"  # token-sized, opaque
        sub = f"user-{i}"
        seen.append(TokenSeen(_tfp(token), "acme", sub, f"client-{i % 50}", "https://idp.example", f"j-{i}",
                              now + 3600, now))
        if i % 10 == 0:
            holds.append(Hold("acme", "token", _tfp(token), "token.revoked", f"token j-{i} was revoked", now,
                              now + 3600))
            tokens.append((token, 403))
        elif i % 10 == 1:
            risk.append(RiskUpdate("subject", sub, "acme", 55.0, "medium", "step_up", ("odd",), now))
            tokens.append((token, 401))
        else:
            tokens.append((token, 204))
    store.holds.upsert(holds, seen)
    store.upsert_risk(risk)
    store.close()
    return tokens


def requests(tokens: list[tuple[str, int]], n: int, path: str, rng: random.Random, *, host: str) -> list[Ask]:
    out = []
    for _ in range(n):
        if rng.random() < 0.1:
            token, expect = f"eyJunknown{rng.getrandbits(64):x}.a.b", 204
        else:
            token, expect = rng.choice(tokens)
        ip = f"198.51.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        data = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                f"X-Forwarded-For: {ip}\r\nX-Gatewatch-Tenant: acme\r\nUser-Agent: bench\r\n\r\n").encode()
        out.append(Ask(data, expect))
    return out


@dataclass
class Run:
    latencies: np.ndarray
    elapsed: float
    wrong: int
    server_cpu: float

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000)


def build_client(tmp: Path) -> Path:
    """bench/openloop.c compiled with the machine's C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("bench/decision.py needs a C compiler (cc or gcc) for its load generator, bench/openloop.c")
    binary = tmp / "openloop"
    subprocess.run([cc, "-O2", "-o", str(binary), str(ROOT / "bench" / "openloop.c")], check=True)
    return binary


def c_open_loop(client: Path, tmp: Path, port: int, asks: list[Ask], rate: float, connections: int,
                pids: list[int], expect: bool) -> Run:
    """`asks` at `rate`/s over `connections` kept-alive connections, driven by bench/openloop.c."""
    reqs, out = tmp / "requests.bin", tmp / "latencies.bin"
    with open(reqs, "wb") as f:
        for a in asks:
            f.write(len(a.data).to_bytes(4, "little") + a.data)
    cpu0 = sum(cpu_seconds(p) for p in pids)
    t0 = time.perf_counter()
    subprocess.run([str(client), "127.0.0.1", str(port), str(rate), str(connections), str(reqs), str(out)],
                   check=True)
    elapsed = time.perf_counter() - t0 - 0.05  # the client starts its schedule 50 ms in
    cpu = sum(cpu_seconds(p) for p in pids) - cpu0
    raw = out.read_bytes()
    n = len(asks)
    lat = np.frombuffer(raw[:8 * n], dtype="<i8") / 1e9
    status = np.frombuffer(raw[8 * n:], dtype="<i4")
    wrong = 0
    for a, st in zip(asks, status, strict=True):
        want = a.expect if expect else 200
        if want == 204 and a.data.startswith(b"GET /orders"):
            want = 200
        wrong += int(st != want)
    return Run(lat, elapsed, wrong, cpu)


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    import socket

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port}")


def nginx_conf(port: int, upstream_port: int, decide_port: int, sink_port: int, *, guarded: bool) -> str:
    """What `gatewatch nginx-config` renders for one route (one worker, fail open), plus a server block of the
    same nginx as the upstream; unguarded, the same file with `auth_request off`."""
    from gatewatch.nginx_config import NginxOptions, Route, render

    text = render(NginxOptions(upstream=f"127.0.0.1:{upstream_port}", decision=f"127.0.0.1:{decide_port}",
                               collector=f"udp:127.0.0.1:{sink_port}", fail="open", listen=f"127.0.0.1:{port}",
                               routes=(Route("/orders", "acme", "orders"),), gateway="bench", workers="1",
                               trusted_proxies=("127.0.0.1/32",)))
    if not guarded:
        assert "auth_request /_gatewatch/decision;" in text
        text = text.replace("auth_request /_gatewatch/decision;", "auth_request off;")
    upstream = (f"    server {{\n        listen 127.0.0.1:{upstream_port};\n        access_log off;\n"
                f"        location / {{ return 200 \"ok\\n\"; }}\n    }}\n}}\n")
    head, _, _ = text.rstrip().rpartition("}")
    return head + upstream


def udp_sink(port: int) -> None:
    """Where nginx's syslog lines go during the benchmark: read and dropped (the collector is not measured)."""
    import socket
    import threading

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))

    def drain() -> None:
        while True:
            sock.recv(65536)

    threading.Thread(target=drain, daemon=True).start()


def start_nginx(prefix: Path, conf_text: str) -> subprocess.Popen[bytes]:
    for d in ("conf", "logs", "tmp"):
        (prefix / d).mkdir(parents=True, exist_ok=True)
    (prefix / "conf" / "nginx.conf").write_text(conf_text, encoding="utf-8")
    return subprocess.Popen([NGINX, "-p", str(prefix), "-c", "conf/nginx.conf", "-e", "stderr"],
                            stderr=subprocess.DEVNULL)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="rounds over the three targets (medians reported)")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--pin", action="store_true",
                    help="servers (nginx, decide) on core 0, this load generator on core 1")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    n = int(args.rate * args.duration)
    with tempfile.TemporaryDirectory(prefix="gw-decide-bench-") as tmp_s:
        tmp = Path(tmp_s)
        db = tmp / "gatewatch.db"
        tokens = seed(db, args.tokens, rng)
        cfg = tmp / "gatewatch.toml"
        cfg.write_text(f'[store]\nurl = "sqlite:///{db}"\n', encoding="utf-8")
        dport, gport, pport, uport1, uport2, sink = (free_port() for _ in range(6))
        udp_sink(sink)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if args.pin:
            os.sched_setaffinity(0, {1})
        decide = subprocess.Popen([sys.executable, "-m", "gatewatch.cli", "--config", str(cfg), "decide",
                                   "--bind", f"127.0.0.1:{dport}"], env=env, stderr=subprocess.DEVNULL)
        guarded = start_nginx(tmp / "guarded", nginx_conf(gport, uport1, dport, sink, guarded=True))
        plain = start_nginx(tmp / "plain", nginx_conf(pport, uport2, dport, sink, guarded=False))
        if args.pin:
            time.sleep(0.5)  # nginx's workers are forked by then
            for proc in (decide, guarded, plain):
                subprocess.run(["taskset", "-a", "-p", "-c", "0", str(proc.pid)], capture_output=True, check=True)
                for child in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                            text=True).stdout.split():
                    subprocess.run(["taskset", "-p", "-c", "0", child], capture_output=True, check=True)
        try:
            wait_port(dport, decide, "gatewatch decide")
            wait_port(gport, guarded, "nginx")
            wait_port(pport, plain, "nginx")

            def family_pids(proc: subprocess.Popen[bytes]) -> list[int]:
                children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout
                return [proc.pid, *map(int, children.split())]
            runs: dict[str, list[Run]] = {"nginx": [], "nginx+decide": [], "decide": []}
            warm = requests(tokens, 4 * len(tokens), "/v1/decision", rng, host="decide")
            client = build_client(tmp)
            c_open_loop(client, tmp, dport, warm, 4 * args.rate, args.connections, [decide.pid], True)  # warm caches
            targets = [("nginx", pport, "/orders", family_pids(plain), False),
                       ("nginx+decide", gport, "/orders", family_pids(guarded) + [decide.pid], True),
                       ("decide", dport, "/v1/decision", [decide.pid], True)]
            steal0 = steal_share()
            for rnd in range(args.repeats):  # the order rotates: no target always runs first or last
                for name, port, path, pids, expect in targets[rnd % 3:] + targets[:rnd % 3]:
                    asks = requests(tokens, n, path, rng, host="gw")
                    r = c_open_loop(client, tmp, port, asks, args.rate, args.connections, pids, expect)
                    runs[name].append(r)
                    print(f"{name:>13}: {r.latencies.size / r.elapsed:7.0f} req/s  p50 {r.pct(50):6.2f} ms  "
                          f"p99 {r.pct(99):6.2f} ms  p99.9 {r.pct(99.9):6.2f} ms  wrong {r.wrong}  "
                          f"server CPU {r.server_cpu / r.elapsed:.0%}", flush=True)
            steal = steal_share(steal0)
        finally:
            for proc in (guarded, plain, decide):
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    if any(r.wrong for rs in runs.values() for r in rs):
        print("wrong statuses: the decisions do not match the seeded store", file=sys.stderr)
        return 1
    if not args.no_write:
        write_section(ROOT / "BENCHMARKS.md", "Gateway decision", report(args, runs, steal))
    return 0


def steal_share(since: tuple[int, int] | None = None) -> tuple[int, int] | float:
    """CPU time the hypervisor gave to others (`steal` of /proc/stat): (steal, total) now, or the share since."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    now = (fields[7] if len(fields) > 7 else 0, sum(fields))
    if since is None:
        return now
    return (now[0] - since[0]) / max(1, now[1] - since[1])


def _median(runs: list[Run], q: float) -> float:
    return float(np.median([r.pct(q) for r in runs]))


def report(args: argparse.Namespace, runs: dict[str, list[Run]], steal: float) -> str:
    nginx_v = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip().removeprefix("nginx version: ")
    rows = []
    for name, rs in runs.items():
        rate = np.median([r.latencies.size / r.elapsed for r in rs])
        cpu = np.median([r.server_cpu / r.elapsed for r in rs])
        p99s = sorted(r.pct(99) for r in rs)
        rows.append(f"| {name} | {rate:,.0f} | {_median(rs, 50):.2f} | {_median(rs, 99):.2f} "
                    f"({p99s[0]:.2f}–{p99s[-1]:.2f}) | {_median(rs, 99.9):.2f} | {cpu:.0%} |")
    table = "\n".join(rows)
    base, guarded, alone = runs["nginx"], runs["nginx+decide"], runs["decide"]
    command = (f"bench/decision.py --rate {args.rate:.0f} --duration {args.duration:.0f} "
               f"--connections {args.connections} --tokens {args.tokens} --repeats {args.repeats}")
    return f"""`{command}`.
{machine_header()} {nginx_v}, one worker process. The hypervisor took {steal:.0%} of the machine's CPU time
("steal") during the measured runs.

Open loop at {args.rate:.0f} requests/s for {args.duration:.0f} s per target over {args.connections} keep-alive
connections, latency from each request's scheduled send time; {args.repeats} rounds over the three targets in
rotating order, medians of the rounds (p99's range in brackets). The store holds {args.tokens:,} token rows, a
tenth of them held (revoked), and step-up risk on another tenth's subjects; a tenth of the requests carry
a token gatewatch never saw. Every answer's status was checked against the seeded rows (204/200, 401, 403).
The load generator is bench/openloop.c (C, epoll; one request in flight per connection), on the same two cores as the servers.

| target | req/s | p50 ms | p99 ms | p99.9 ms | server CPU |
|---|---|---|---|---|---|
{table}

Asking gatewatch adds {_median(guarded, 50) - _median(base, 50):.2f} ms at the median and
{_median(guarded, 99) - _median(base, 99):.2f} ms at p99 to a request through nginx; the decision alone answers at
p99 {_median(alone, 99):.2f} ms. Server CPU is the share of one core used by nginx (master and worker) and, where
asked, `gatewatch decide`.
"""


if __name__ == "__main__":
    raise SystemExit(main())
