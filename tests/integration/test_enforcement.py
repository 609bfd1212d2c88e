"""Gateways act on gatewatch, end to end: the real nginx asks the real `gatewatch decide`, which reads what the
real `gatewatch run` worker concluded from nginx's own access log (through `gatewatch collect` and the real
broker) and from the authorization server's token events (issue 15).

A user's requests pass; the same token replayed from another network and agent is detected, and the next
request with it through nginx is refused within 2 s of the replay reaching Kafka; a revoked token is refused;
the access tokens of a reused refresh family are refused; with gatewatch down, nginx applies its fail mode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from gatewatch.keys import TokenMinter
from ingest.tokens import fingerprint
from scoring.alerts import rfc3339
from tests.conftest import write_config
from tests.integration.kafka_helpers import produce
from tests.integration.test_nginx_gateway import request
from tests.nginx_helpers import CollectorProcess, Nginx, Upstream, free_port, private_dir, render_config, wait_for

ROOT = Path(__file__).resolve().parents[2]
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
SCRIPT = "python-requests/2.31.0"


class Gatewatch:
    """`gatewatch run` and `gatewatch decide` as processes on one config and store."""

    def __init__(self, home: Path, cfg: Path, env: dict[str, str]) -> None:
        self.home, self.cfg = home, cfg
        self.env = {**os.environ, **env, "GATEWATCH_CONFIG": str(cfg), "PYTHONPATH": str(ROOT)}
        self.decide_port = free_port()
        self.run = self._start("run.stderr", "run")
        self.decide = self._start("decide.stderr", "decide", "--bind", f"127.0.0.1:{self.decide_port}")
        wait_for(lambda: "listening on" in (home / "decide.stderr").read_text(), 60, "gatewatch decide to listen")

    def _start(self, log: str, *args: str) -> subprocess.Popen[bytes]:
        with open(self.home / log, "ab") as err:
            return subprocess.Popen([sys.executable, "-m", "gatewatch.cli", *args], env=self.env, cwd=self.home,
                                    stdout=subprocess.DEVNULL, stderr=err)

    def stop(self) -> None:
        for proc in (self.decide, self.run):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()


@pytest.fixture()
def edge(tmp_path: Path, keys_dir: Path, kafka_env: dict[str, str]) -> Iterator[dict]:
    cfg = write_config(tmp_path, keys_dir, "[decision]\nrefresh_seconds = 0.05\n")
    with private_dir(tmp_path) as prefix:
        listen = f"udp:127.0.0.1:{free_port()}"
        upstream = Upstream()
        collector = CollectorProcess(listen, kafka_env, prefix / "collector.stderr")
        gw = Gatewatch(tmp_path, cfg, kafka_env)
        nginx = Nginx(prefix / "nginx", free_port())
        options = {"upstream": f"127.0.0.1:{upstream.port}", "decision": f"127.0.0.1:{gw.decide_port}",
                   "collector": listen, "gateway": "edge-1", "routes": [("/api/", "acme", "orders")],
                   "trusted_proxies": ("127.0.0.1/32",)}
        nginx.start(render_config(listen=f"127.0.0.1:{nginx.port}", fail="open", **options))
        try:
            yield {"nginx": nginx, "gw": gw, "env": kafka_env, "options": options, "prefix": prefix,
                   "upstream": upstream, "collector": collector}
        finally:
            nginx.stop()
            gw.stop()
            collector.kill()
            upstream.stop()


def _mint(minter: TokenMinter, sub: str) -> tuple[str, str]:
    jti = uuid.uuid4().hex
    now = int(time.time())
    return minter.mint({"iss": "https://idp.example", "aud": "api://gateway", "sub": sub, "client_id": f"{sub}-app",
                        "jti": jti, "iat": now - 5, "exp": now + 3600}), jti


def _token_event(type_: str, ts: float, **fields: str) -> bytes:
    return json.dumps({"kind": "token", "event_id": uuid.uuid4().hex, "ts": rfc3339(ts), "tenant": "acme",
                       "type": type_, **fields}).encode()


def _get(port: int, token: str, ip: str, agent: str) -> tuple[int, dict[str, str]]:
    status, headers, _, _ = request(port, "GET", "/api/orders", bearer=token,
                                    headers={"X-Forwarded-For": ip, "User-Agent": agent})
    return status, headers


def _until(port: int, token: str, status: int, timeout: float) -> tuple[float, dict[str, str]]:
    """Ask through nginx (from the owner's context) until the answer is `status`; (time it came, its headers)."""
    deadline = time.time() + timeout
    while True:
        got, headers = _get(port, token, "203.0.113.7", FIREFOX)
        if got == status:
            return time.time(), headers
        assert time.time() < deadline, f"still {got} after {timeout} s, not {status}"
        time.sleep(0.05)


def _arrival_ms(bootstrap: str, topic: str, agent: str, timeout: float = 30.0) -> int:
    """The broker timestamp of the first access record with this user agent: when it reached Kafka."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=500)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for msg in consumer:
                if json.loads(msg.value).get("user_agent") == agent:
                    return msg.timestamp
        raise AssertionError(f"no record from {agent!r} reached {topic}")
    finally:
        consumer.close()


def test_nginx_enforces_what_gatewatch_finds(edge, minter: TokenMinter) -> None:
    nginx, gw, env = edge["nginx"], edge["gw"], edge["env"]
    bootstrap, tokens_topic = env["GATEWATCH_KAFKA__BOOTSTRAP_SERVERS"], env["GATEWATCH_KAFKA__TOKENS_TOPIC"]
    port = nginx.port
    alice, _ = _mint(minter, "alice")
    bob, bob_jti = _mint(minter, "bob")
    carol_1, _ = _mint(minter, "carol")
    carol_2, _ = _mint(minter, "carol")
    now = time.time()

    # The user's requests pass (the worker has started and reads the topics: wait for its first decisions).
    for _ in range(3):
        assert _get(port, alice, "203.0.113.7", FIREFOX)[0] == 200
    assert _get(port, bob, "203.0.113.8", FIREFOX)[0] == 200
    assert _get(port, carol_2, "203.0.113.9", FIREFOX)[0] == 200

    # The worker is up and has read those requests: it wrote alice's token row (whose token it is).
    from api.store import AlertStore
    store = AlertStore(str(gw.home / "gatewatch.db"), risk_staleness_seconds=0)
    wait_for(lambda: store.holds.token(fingerprint(alice)) is not None, 90, "the worker to read the access log")
    assert store.holds.token(fingerprint(alice)).sub == "alice"

    # carol's refresh family: logged in with (carol_1, rt-1), rotated rt-1 -> rt-2 with carol_2 two minutes ago.
    produce(bootstrap, tokens_topic, [
        _token_event("issued", now - 180, token=carol_1, refresh_jti="rt-1", sub="carol"),
        _token_event("refreshed", now - 120, presented_jti="rt-1", issued_jti="rt-2", sub="carol"),
        _token_event("issued", now - 119.99, token=carol_2, refresh_jti="rt-2", sub="carol"),
    ])

    # 1. Replay: alice's token from another network and another agent. That request itself passes (nothing is
    # known yet); once its log line reaches Kafka the worker finds it, and nginx refuses the token.
    assert _get(port, alice, "198.51.100.200", SCRIPT)[0] == 200
    arrived = _arrival_ms(bootstrap, env["GATEWATCH_KAFKA__ACCESS_TOPIC"], SCRIPT) / 1000
    refused_at, headers = _until(port, alice, 403, timeout=60)
    assert headers["x-gatewatch-action"] == "deny" and headers["x-gatewatch-risk"] == "100"
    assert headers["x-gatewatch-reason"].startswith("replay.token_context")
    assert refused_at - arrived <= 2.0, f"403 came {refused_at - arrived:.2f} s after the replay reached Kafka"

    # 2. Revocation at the authorization server: bob's token is refused from then on.
    produce(bootstrap, tokens_topic, [_token_event("revoked", time.time(), jti=bob_jti, sub="bob")])
    _, headers = _until(port, bob, 403, timeout=30)
    assert headers["x-gatewatch-reason"] == f"token {bob_jti[:8]}... was revoked at the authorization server"

    # 3. rt-1 presented again: the family is compromised, both of carol's access tokens are refused.
    assert _get(port, carol_2, "203.0.113.9", FIREFOX)[0] == 200
    produce(bootstrap, tokens_topic, [
        _token_event("refreshed", time.time(), presented_jti="rt-1", issued_jti="rt-x", sub="carol")])
    _, headers = _until(port, carol_2, 403, timeout=30)
    assert headers["x-gatewatch-reason"].startswith("replay.refresh_reuse: refresh token rt-1")
    assert _get(port, carol_1, "203.0.113.9", FIREFOX)[0] == 403

    # A fresh token of another user is untouched by all this.
    dave, _ = _mint(minter, "dave")
    assert _get(port, dave, "203.0.113.10", FIREFOX)[0] == 200

    # The analyst sees the same: the tokens are held on their entity pages' source (the store).
    held = {h.value: h.type for h in store.holds.holds_of(
        [("token", fingerprint(t)) for t in (alice, bob, carol_1, carol_2)])}
    assert held == {fingerprint(alice): "replay.token_context", fingerprint(bob): "token.revoked",
                    fingerprint(carol_1): "replay.refresh_reuse", fingerprint(carol_2): "replay.refresh_reuse"}

    # 4. gatewatch down: nginx's fail mode. Open lets the request through; closed answers 503.
    gw.decide.terminate()
    gw.decide.wait(30)
    assert _get(port, alice, "203.0.113.7", FIREFOX)[0] == 200  # fail open: even a held token passes
    assert nginx.stop() == 0
    closed = Nginx(edge["prefix"] / "nginx-closed", free_port())
    closed.start(render_config(listen=f"127.0.0.1:{closed.port}", fail="closed", **edge["options"]))
    try:
        status, headers = _get(closed.port, dave, "203.0.113.10", FIREFOX)
        assert status == 503 and "retry-after" in headers
    finally:
        closed.stop()
