"""The gateway's decision: allow (204), step up (401) or deny (403) one request, from what gatewatch knows.

Asked by nginx `auth_request`, Envoy `ext_authz` (HTTP), Traefik/Caddy forward-auth — the gateway
forwards the request's `Authorization` header, the client address and its tenant and route
(api/decision_server.py reads them). Nothing is decrypted or verified here: the token is named by its
fingerprint (`tfp`, SHA-256 of the compact token), and the pipeline has filled, keyed by it, whose token
it is and whether it is held (api/holds_table.py). In order:

1. a hold on the token — revoked, replayed from a second context, of a reused refresh family → deny;
2. a hold on its subject or client (in the token's tenant), or on the client address or the tenant (in the
   route's tenant) — e.g. an LLM budget spent → deny;
3. the risk rows of the token, its subject and client, and the client address (api/risk_table.py): the
   riskiest decides — `deny` → 403, `step_up` → 401, else allow.

An unknown token (never seen signed by a worker) has no subject or client: only the address rules apply.
This is a read of two cached tables per request; no model, no SQL on a warm cache.
"""

from __future__ import annotations

import hashlib
import ipaddress
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from api.auth import bearer_of
from api.store import AlertStore
from scoring.holds import Hold

ALLOW, STEP_UP, DENY = 204, 401, 403
_STATUS = {"allow": ALLOW, "step_up": STEP_UP, "deny": DENY}


@dataclass(frozen=True, slots=True)
class Decision:
    status: int  # 204 | 401 | 403
    action: str  # allow | step_up | deny
    risk: float  # 0..100; a hold is 100
    reason: str  # "" when allowed without any risk
    entity: str = ""  # kind:value that decided ("" when nothing did)


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    authorization: str | None
    client_ip: str | None  # resolved through the trusted proxies, canonical (`client_address` gives both)
    tenant: str | None  # the route's tenant, as the gateway names it
    route: str | None = None


def bearer_token(authorization: str | None, max_bytes: int) -> str | None:
    """The compact token of `Bearer <token>` (the API's own parsing, `bearer_of`), if it could be one: at most
    `max_bytes`, no space inside; None for anything else."""
    token = bearer_of(authorization.strip() if authorization else None)
    if token is None or len(token) > max_bytes or " " in token:
        return None
    return token


def tfp_of(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()[:16]


class DecisionEngine:
    def __init__(self, store: AlertStore, *, fail_mode: str = "open", max_token_bytes: int = 16_384) -> None:
        self.store = store
        self.fail_mode = fail_mode
        self.max_token_bytes = max_token_bytes

    def decide(self, req: DecisionRequest, now: float) -> Decision:
        """`now`: the wall clock (epoch seconds) — holds end at event times, which live traffic shares."""
        try:
            return self._decide(req, now)
        except sqlite3.Error:  # the store cannot be read: the operator's fail mode
            if self.fail_mode == "closed":
                return Decision(DENY, "deny", 100.0, "gatewatch cannot read its store (fail closed)")
            return Decision(ALLOW, "allow", 0.0, "gatewatch cannot read its store (fail open)")

    def _decide(self, req: DecisionRequest, now: float) -> Decision:
        holds, risk = self.store.holds, self.store.risk
        token = bearer_token(req.authorization, self.max_token_bytes)
        tfp = tfp_of(token) if token is not None else None
        seen = holds.token(tfp) if tfp is not None else None
        route_tenants = None if not req.tenant else (req.tenant,)
        token_tenants = (seen.tenant,) if seen is not None else route_tenants

        if tfp is not None:
            found = _live(holds.holds_of([("token", tfp)]), now)
            if found is not None:
                return _held(found)
        keys_token_tenant: list[tuple[str, str]] = []
        if seen is not None:
            if seen.sub:
                keys_token_tenant.append(("subject", seen.sub))
            if seen.client_id:
                keys_token_tenant.append(("client", seen.client_id))
        keys_route_tenant: list[tuple[str, str]] = []
        if req.client_ip:
            keys_route_tenant.append(("ip", req.client_ip))
        if req.tenant:
            keys_route_tenant.append(("tenant", req.tenant))
        found = _live(holds.holds_of(keys_token_tenant, token_tenants) +
                      holds.holds_of(keys_route_tenant, route_tenants), now)
        if found is not None:
            return _held(found)

        token_key = [("token", tfp)] if tfp is not None else []
        if seen is not None:
            rows = risk.risk_of_keys(token_key + keys_token_tenant, token_tenants)
        else:  # unknown token: its own row only, in any tenant
            rows = risk.risk_of_keys(token_key, None)
        if req.client_ip:
            rows += risk.risk_of_keys([("ip", req.client_ip)], route_tenants)
        if not rows:
            return Decision(ALLOW, "allow", 0.0, "")
        top = max(rows, key=lambda r: (r.score, r.kind, r.value))
        reason = top.reasons[0] if top.reasons else ""
        return Decision(_STATUS.get(top.action, ALLOW), top.action, top.score, reason, f"{top.kind}:{top.value}")


def _live(found: Sequence[Hold], now: float) -> Hold | None:
    live = [h for h in found if h.until > now]
    return max(live, key=lambda h: (h.until, h.type)) if live else None


def _held(hold: Hold) -> Decision:
    value = hold.value if hold.kind != "token" else f"tfp {hold.value}"
    return Decision(DENY, "deny", 100.0, hold.reason, f"{hold.kind}:{value}")


def client_address(peer: str | None, forwarded_for: str | None,
                   trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str | None:
    """The client: the peer, unless it is a trusted proxy — then the right-most X-Forwarded-For address that
    is not one (RFC 7239 §7.5's advice for the de-facto header). An entry that is not an address ends the
    walk at the last trusted hop: a client cannot smuggle a name or junk past the proxies."""
    if peer is None:
        return None
    addr = _parse(peer)
    if addr is None or not forwarded_for or not any(addr in net for net in trusted):
        return str(addr) if addr is not None else peer
    client = addr
    for entry in reversed(forwarded_for.split(",")):
        hop = _parse(entry.strip())
        if hop is None:
            break
        client = hop
        if not any(hop in net for net in trusted):
            break
    return str(client)


def _parse(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr
