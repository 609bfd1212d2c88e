"""The naive baseline of bench/replay.py: gatewatch's rules as one plain loop over plain dicts.

This is what a competent engineer writes in an afternoon without gatewatch's framework (no typed
records, no state store, no packing, no partitioning, no alert grouping, no scoring): decode each
JSONL line into a dict, parse its time, validate its token with the project's own `TokenValidator`
(joserfc underneath, with its LRU token cache, the one cache allowed here), then run every rule
against a handful of dicts. Findings are (type, entity value) pairs in a set, so the result is the
number of distinct findings per alert type (CONTRACT.md §5). Event time only: nothing here reads
the wall clock except the timing in `main()`.

Not covered: `anomaly.behaviour` (needs the trained model), out-of-order and redelivery subtleties,
flapping token contexts, sliding windows (rate limits count in fixed 60 s windows).

Usage: .venv/bin/python bench/naive_engine.py --config FILE PATH
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import time
from datetime import datetime
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gatewatch.settings import load_settings  # noqa: E402
from ingest.tokens import TokenValidator  # noqa: E402

REQUIRED = {
    "access": ("event_id", "ts", "gateway", "tenant", "client_ip", "method", "path", "status"),
    "token": ("event_id", "ts", "tenant", "type"),
}
NEEDS = {"issued": "token", "revoked": "jti", "refreshed": "presented_jti"}

MAX_EVENT_BYTES = 65_536
NONCE_WINDOW = 300.0  # s a nonce stays one-time
REFRESH_GRACE = 10.0  # s: two browser tabs refreshing with one token at once is normal
REVOKE_GRACE = 5.0  # s: requests already in flight when the user logged out
WINDOW = 60.0  # s, fixed windows for rate limits and refused-token bursts
LIMITS = {"subject": 600, "client": 6000, "ip": 600, "tenant": 60000}
INVALID_BURST = 20
NOT_REFUSED = ("ok", "expired", "not_yet_valid")  # verdicts that are not a forgery or probe
ALLOW_LISTS: dict[tuple[str, str | None], list[ipaddress.IPv4Network | ipaddress.IPv6Network]] = {}  # none configured


def agent_family(ua: str | None) -> str:
    """A few substring checks: browser, mobile, sdk, script, probe, bot, server, none."""
    if not ua:
        return "none"
    u = ua.lower()
    if "bot" in u or "crawler" in u or "spider" in u:
        return "bot"
    if "iphone" in u or "android" in u:
        return "mobile"
    if u.startswith("mozilla/"):
        return "browser"
    if "-sdk-" in u or "-cli/" in u or "openai-" in u:
        return "sdk"
    if u.startswith(("curl/", "wget/", "python-requests", "httpie", "postman")):
        return "script"
    if "probe" in u or "healthcheck" in u:
        return "probe"
    return "server"


def network(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The /16 (IPv4) or /48 (IPv6) the address is in."""
    return ipaddress.ip_network((addr, 16 if addr.version == 4 else 48), strict=False)


class NaiveEngine:
    def __init__(self, validator: TokenValidator) -> None:
        self.validator = validator
        self.findings: set[tuple[str, str]] = set()
        self.dead_letters = 0
        self.tokens: dict[tuple[str, str], dict] = {}  # (iss, jti) -> what we know of that token
        self.nonces: dict[tuple[str, str], tuple[float, str]] = {}  # (tenant, nonce) -> (first ts, event id)
        self.refreshed: dict[tuple[str, str], float] = {}  # (tenant, presented_jti) -> ts of the rotation
        self.revoked: dict[tuple[str, str], float] = {}  # (tenant, jti) -> ts of the revocation
        self.counters: dict[tuple[str, str, str, str | None, int], int] = {}  # (dim, tenant, value, route, window)
        self.refused: dict[tuple[str, int], int] = {}  # (ip, window) -> refused tokens
        self.unencrypted: set[tuple[str | None, str | None]] = set()  # (iss, client) reported
        self.last_sweep = 0.0

    # -- input --------------------------------------------------------------------------------
    def feed(self, line: bytes) -> None:
        if len(line) > MAX_EVENT_BYTES:
            self.dead_letters += 1
            return
        try:
            ev = msgspec.json.decode(line)
        except msgspec.DecodeError:
            self.dead_letters += 1
            return
        if not isinstance(ev, dict) or ev.get("kind") not in ("access", "token") \
                or any(ev.get(f) is None for f in REQUIRED[ev["kind"]]) \
                or not isinstance(ev.get("token", ""), str) \
                or (ev["kind"] == "access" and not isinstance(ev["status"], int)):
            self.dead_letters += 1
            return
        try:
            ts = datetime.fromisoformat(ev["ts"]).timestamp()
        except (TypeError, ValueError):
            self.dead_letters += 1
            return
        if ts - self.last_sweep >= WINDOW:
            self.sweep(ts)
        if ev["kind"] == "access":
            self.access(ev, ts)
        else:
            self.token_event(ev, ts)

    def sweep(self, now: float) -> None:
        """Forget what no rule can use any more (once a minute of event time)."""
        self.last_sweep = now
        self.nonces = {k: v for k, v in self.nonces.items() if now - v[0] <= NONCE_WINDOW}
        w = int(now // WINDOW)
        self.counters = {k: n for k, n in self.counters.items() if k[4] >= w - 1}
        self.refused = {k: n for k, n in self.refused.items() if k[1] >= w - 1}
        self.refreshed = {k: t for k, t in self.refreshed.items() if now - t <= 86_400}
        self.revoked = {k: t for k, t in self.revoked.items() if now - t <= 86_400}
        self.tokens = {k: t for k, t in self.tokens.items() if t["exp"] is None or now <= t["exp"] + 3600}

    def found(self, kind: str, entity: str | None) -> None:
        if entity is not None:
            self.findings.add((kind, entity))

    # -- token lifecycle events -----------------------------------------------------------------
    def token_event(self, ev: dict, ts: float) -> None:
        typ = ev["type"]
        if typ not in ("issued", "revoked", "refreshed") or not ev.get(NEEDS[typ]):
            self.dead_letters += 1
            return
        tenant = ev["tenant"]
        if typ == "issued":
            info = self.validator.check(ev["token"], ts)
            if info.signed and info.jti:
                self.remember(info, ts, ctx=None)  # token.jti_collision, before any use
        elif typ == "revoked":
            self.revoked.setdefault((tenant, ev["jti"]), ts)
        else:  # refreshed: the presented refresh token is retired; presenting it again is reuse
            key = (tenant, ev["presented_jti"])
            rotated = self.refreshed.get(key)
            if rotated is None:
                self.refreshed[key] = ts
            elif ts - rotated > REFRESH_GRACE:
                self.found("replay.refresh_reuse", ev.get("sub") or ev.get("client_id") or tenant)

    def remember(self, info, ts: float, ctx: tuple | None) -> tuple[dict, bool]:
        """The token's dict, and whether this token is the one the dict was made for: a second token
        with the same (iss, jti) but another sub or iat is a jti collision."""
        key = (info.iss, info.jti)
        tok = self.tokens.get(key)
        if tok is None:
            tok = {"ctx": ctx, "revoked": None, "exp": info.exp, "sub": info.sub, "iat": info.iat}
            self.tokens[key] = tok
        if tok["sub"] != info.sub or tok["iat"] != info.iat:
            self.found("token.jti_collision", info.sub)
            return tok, False
        return tok, True

    # -- access events --------------------------------------------------------------------------
    def access(self, ev: dict, ts: float) -> None:
        tenant, ip, route, status = ev["tenant"], ev["client_ip"], ev.get("route"), ev["status"]
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            self.dead_letters += 1
            return
        info = self.validator.check(ev["token"], ts) if ev.get("token") else None
        signed = info is not None and info.signed
        sub = info.sub if signed else None
        client = info.client_id if signed else None
        window = int(ts // WINDOW)

        # traffic.rate_limit: fixed 60 s windows per (dimension, tenant, value, route)
        for dim, value in (("subject", sub), ("client", client), ("ip", ip), ("tenant", tenant)):
            if value is None:
                continue
            key = (dim, tenant, value, route, window)
            n = self.counters.get(key, 0) + 1
            self.counters[key] = n
            if n > LIMITS[dim]:
                self.found("traffic.rate_limit", value)

        # traffic.ip_not_allowed: nothing configured, but pay for the lookup
        allowed = ALLOW_LISTS.get((tenant, route)) or ALLOW_LISTS.get((tenant, None))
        if allowed and not any(addr in cidr for cidr in allowed):
            self.found("traffic.ip_not_allowed", ip)

        # replay.nonce: a one-time nonce seen again (another request) inside its window
        nonce = ev.get("nonce")
        if nonce:
            key = (tenant, nonce)
            first = self.nonces.get(key)
            if first is None or ts - first[0] > NONCE_WINDOW:
                self.nonces[key] = (ts, ev["event_id"])
            elif first[1] != ev["event_id"]:
                self.found("replay.nonce", sub or ip)

        if info is None:
            return
        # token.invalid: a burst of refused tokens from one IP
        if info.verdict not in NOT_REFUSED:
            key = (ip, window)
            self.refused[key] = self.refused.get(key, 0) + 1
            if self.refused[key] >= INVALID_BURST:
                self.found("token.invalid", ip)
        if not signed:
            return

        # token.unencrypted: plain JWS, once per (issuer, client)
        if not info.encrypted and (info.iss, client) not in self.unencrypted:
            self.unencrypted.add((info.iss, client))
            self.found("token.unencrypted", client or sub or info.tfp)
        # token.expired_use: used after exp + leeway and the gateway let it through
        if info.verdict == "expired" and status < 400:
            self.found("token.expired_use", sub)
        # token.cross_tenant: a token of tenant A on tenant B's API
        if info.tid is not None and info.tid != tenant:
            self.found("token.cross_tenant", sub)
        if info.verdict not in ("ok", "expired") or not info.jti:
            return

        # replay.nonce, single-use tokens (`use: once`): the token itself is the one-time value
        if info.use == "once":
            key = ("once", info.tfp)
            first = self.nonces.get(key)
            if first is None or ts - first[0] > NONCE_WINDOW:
                self.nonces[key] = (ts, ev["event_id"])
            elif first[1] != ev["event_id"]:
                self.found("replay.nonce", sub)

        ctx = (network(addr), agent_family(ev.get("user_agent")))
        tok, same = self.remember(info, ts, ctx)  # token.jti_collision
        # token.revoked_use: used more than the grace after its revocation
        if tok["revoked"] is None:
            tok["revoked"] = self.revoked.get((info.tid or tenant, info.jti))
        if tok["revoked"] is not None and ts > tok["revoked"] + REVOKE_GRACE:
            self.found("token.revoked_use", sub)
        # replay.token_context: another network AND another kind of client than the first use
        if info.verdict == "ok" and same:  # (a colliding forgery is not a use of the original)
            if tok["ctx"] is None:
                tok["ctx"] = ctx
            elif ctx[0] != tok["ctx"][0] and ctx[1] != tok["ctx"][1]:
                self.found("replay.token_context", sub)


def replay(lines: list[bytes], validator: TokenValidator) -> NaiveEngine:
    engine = NaiveEngine(validator)
    for line in lines:
        engine.feed(line)
    return engine


def by_type(engine: NaiveEngine) -> dict[str, int]:
    counts: dict[str, int] = {}
    for kind, _ in engine.findings:
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def run(lines: list[bytes], validator: TokenValidator) -> dict[str, int]:
    """Replay the lines; the number of distinct (type, entity) findings per alert type."""
    return by_type(replay(lines, validator))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="gatewatch TOML config (keys, tokens, limits)")
    parser.add_argument("path", help="JSONL file of access and token events")
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    validator = TokenValidator.from_config(settings.tokens, settings.keys, settings.limits)
    with open(args.path, "rb") as fh:
        lines = [line for line in fh if line.strip()]
    start = time.perf_counter()
    engine = replay(lines, validator)
    seconds = time.perf_counter() - start
    print(json.dumps({"events": len(lines), "seconds": round(seconds, 3),
                      "events_per_second": round(len(lines) / seconds),
                      "dead_letters": engine.dead_letters, "findings": by_type(engine)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
