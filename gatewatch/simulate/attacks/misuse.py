"""Token-misuse scenarios: revoked, expired, cross-tenant, colliding `jti`, invalid and unencrypted tokens."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

from gatewatch.simulate.attacks._common import (intruder_ip, is_user, merge, reserve, tool_ua, uses_token,
                                                weighted_tenant)
from gatewatch.simulate.context import Item, Sim
from gatewatch.simulate.model import AttackRun
from gatewatch.simulate.requests import pick_api, request
from gatewatch.simulate.traffic import session_ip, user_session

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def revoked_use(sim: Sim, t0: float, run: AttackRun) -> Iterator[Item]:
    """The user logs out (the token is revoked), but a stale tab of the same browser keeps using it."""
    rng, broker = sim.rng, sim.tokens
    dev = reserve(sim, families=("browser", "mobile"), pred=is_user)
    assert dev is not None
    ip, _ = session_ip(sim, dev, t0)
    t = yield from user_session(sim, dev, t0, actions=rng.randint(3, 8), logout=False, ip=ip)
    t += rng.uniform(1.0, 20.0)
    if dev.token is None or dev.exp - t < 400:  # make sure the token outlives the scenario
        refresh = dev.refresh_jti is not None and t < dev.refresh_exp
        for item in broker.refresh(dev, t, ip, race=False) if refresh else broker.login(dev, t, ip):
            yield item
            t = item[0] + rng.uniform(0.5, 3.0)
    exp = dev.exp
    items, token, _ = broker.logout(dev, t, ip)
    yield from items
    labels = run.labels("subject", dev.sub)
    t = items[-1][0] + rng.uniform(30.0, min(600.0, (exp - t) / 2))
    for _ in range(rng.randint(3, 12)):
        if t > exp - 5.0:
            break
        yield request(sim, t, dev.tenant, pick_api(sim, dev.apis), ip=ip, ua=dev.user_agent, device=dev,
                      token=token, nonce=sim.nonce() if dev.dpop_jkt else None, key=dev.sub, labels=labels)
        t += sim.lognormal(20.0, 0.8)
    dev.busy -= 1


def expired_use(sim: Sim, t0: float, run: AttackRun) -> Iterator[Item]:
    """A client keeps sending a token that expired minutes to an hour ago, and the gateway lets it in."""
    rng, broker = sim.rng, sim.tokens
    dev = reserve(sim, families=("browser", "mobile", "sdk"), pred=is_user)
    assert dev is not None
    iat = int(t0 - dev.lifetime - rng.uniform(300.0, 3600.0))
    token = broker.mint(broker.claims(dev, iat))
    ip, _ = session_ip(sim, dev, t0)
    labels = run.labels("subject", dev.sub)
    t = t0
    for _ in range(rng.randint(5, 20)):
        yield request(sim, t, dev.tenant, pick_api(sim, dev.apis), ip=ip, ua=dev.user_agent, device=dev,
                      token=token, nonce=sim.nonce() if dev.dpop_jkt else None, key=dev.sub, labels=labels,
                      status=200)
        t += sim.lognormal(20.0, 1.0)
    dev.busy -= 1


def cross_tenant(sim: Sim, t0: float, run: AttackRun) -> Iterator[Item]:
    """A user of tenant A calls tenant B's APIs with A's token, in between their normal work."""
    rng = sim.rng
    dev = reserve(sim, families=("browser", "sdk", "mobile"), pred=is_user)
    assert dev is not None
    other = sim.other_tenant(dev.tenant)
    if other is None:  # a single tenant: nothing to cross into
        dev.busy -= 1
        return
    labels = run.labels("subject", dev.sub)
    ip, _ = session_ip(sim, dev, t0)
    apis = other.api_mix(dev.mix)
    started = []

    def hook(item: Item) -> list[Item]:
        if started or not uses_token(item):
            return []
        started.append(item)
        token, exp = dev.token, dev.exp
        t, out = item[0] + rng.uniform(2.0, 20.0), []
        for _ in range(rng.randint(5, 20)):
            if t > exp - 5.0:
                break
            out.append(request(sim, t, other, pick_api(sim, apis), ip=ip, ua=dev.user_agent, token=token,
                               nonce=sim.nonce() if dev.dpop_jkt else None, key=dev.sub, labels=labels,
                               status=rng.choice((None, None, None, 403, 404))))
            t += sim.lognormal(6.0, 0.8)
        return out

    yield from merge(user_session(sim, dev, t0, actions=rng.randint(6, 12), ip=ip), hook)
    dev.busy -= 1


def jti_collision(sim: Sim, t0: float, run: AttackRun) -> Iterator[Item]:
    """Someone holding the signing key forges a token for another (preferably admin) subject and
    reuses a live token's `jti`: two tokens, one `jti`, different subjects and issue times."""
    rng, broker = sim.rng, sim.tokens
    dev = reserve(sim, families=("browser", "mobile", "sdk"), pred=is_user)
    assert dev is not None
    others = [s for s in dev.tenant.users if s is not dev.subject]
    target = rng.choice([s for s in others if s.role == "admin"] or others or [dev.subject])
    labels = run.labels("subject", target.sub)
    tenant, apis = dev.tenant, dev.tenant.api_mix("browser")
    ip, ua = intruder_ip(sim), tool_ua(sim)
    started = []

    def hook(item: Item) -> list[Item]:
        if started or not uses_token(item) or dev.claims is None:
            return []
        started.append(item)
        iat = max(int(item[0]), dev.iat + 1)
        claims = {**dev.claims, "sub": target.sub, "iat": iat, "nbf": iat, "exp": iat + 3600}
        claims.pop("cnf", None)
        forged = broker.mint(claims)
        t, out = max(item[0] + rng.uniform(5.0, 90.0), iat + 1.0), []
        for _ in range(rng.randint(3, 15)):
            out.append(request(sim, t, tenant, pick_api(sim, apis), ip=ip, ua=ua, token=forged, key=target.sub,
                               labels=labels))
            t += sim.lognormal(10.0, 0.8)
        return out

    yield from merge(user_session(sim, dev, t0, actions=rng.randint(6, 12)), hook)
    dev.busy -= 1


def _flip(sim: Sim, segment: str) -> str:
    """Change one character in the middle (never the last: it may only carry padding bits)."""
    i = sim.rng.randint(2, max(2, len(segment) - 3))
    old = segment[i]
    new = sim.rng.choice(_B64.replace(old, ""))
    return segment[:i] + new + segment[i + 1:]


def _b64json(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()


def _garbage(sim: Sim, jws: str, jwe: str, sub: str) -> str:
    rng = sim.rng
    kind = rng.random()
    if kind < 0.2:  # opaque junk
        return "".join(rng.choice(_B64) for _ in range(rng.randint(16, 300)))
    if kind < 0.27:
        return rng.choice(("undefined", "null", "Bearer", "[object Object]", "eyJ"))
    if kind < 0.45:  # tampered signature
        h, p, s = jws.split(".")
        return f"{h}.{p}.{_flip(sim, s)}"
    if kind < 0.58:  # tampered claims, original signature
        h, p, s = jws.split(".")
        return f"{h}.{_flip(sim, p)}.{s}"
    if kind < 0.78:  # corrupted JWE ciphertext
        parts = jwe.split(".")
        parts[3] = _flip(sim, parts[3])
        return ".".join(parts)
    if kind < 0.86:  # truncated JWE
        return ".".join(jwe.split(".")[:4])
    header = rng.choice(({"alg": "none", "typ": "JWT"}, {"alg": "HS256", "typ": "JWT"}))
    payload = _b64json({"sub": sub, "role": "admin", "exp": 4102444800, "iss": "https://idp.example"})
    sig = "" if header["alg"] == "none" else "".join(rng.choice(_B64) for _ in range(43))
    return f"{_b64json(header)}.{payload}.{sig}"


def invalid(sim: Sim, t0: float, run: AttackRun) -> Iterator[Item]:
    """A burst of forged, tampered and garbage tokens from one address, all refused with 401."""
    rng, broker = sim.rng, sim.tokens
    tenant = weighted_tenant(sim)
    victim = rng.choice(tenant.devices)
    claims = broker.claims(victim, int(t0) - 60)
    jws, jwe = broker.mint(claims, encrypt=False), broker.mint(claims)
    ip, ua = intruder_ip(sim), tool_ua(sim)
    labels = run.labels("ip", ip)
    apis = tenant.api_mix("browser")
    n = rng.randint(30, 100)
    rate = n / rng.uniform(40.0, 80.0)
    t = t0
    for _ in range(n):
        t += rng.expovariate(rate)
        yield request(sim, t, tenant, pick_api(sim, apis), ip=ip, ua=ua, token=_garbage(sim, jws, jwe, victim.sub),
                      key=ip, status=401, labels=labels)


def unencrypted(sim: Sim, t0: float, run: AttackRun) -> Iterator[Item]:
    """A newly deployed instance of a service client gets plain JWS tokens (a wrong authorization-server
    profile) and uses them for a while, next to the correctly configured instances."""
    rng, broker = sim.rng, sim.tokens
    dev = rng.choice(sim.pop.services)
    labels = run.labels("client", dev.client_id)
    ip = rng.choice(dev.subject.ips)
    t, end = t0, t0 + rng.uniform(600.0, 1500.0)
    token, exp = None, 0.0
    while t < end:
        if token is None or t > exp - 60.0:
            yield broker.token_call(dev, t, ip)
            claims = broker.claims(dev, int(t))
            token, exp = broker.mint(claims, encrypt=False), claims["exp"]
            t += rng.uniform(0.005, 0.04)
            yield sim.token_event(t, dev.tenant, "issued", sub=dev.sub, client_id=dev.client_id, token=token,
                                  labels=labels)
            t += rng.uniform(0.05, 0.3)
        yield request(sim, t, dev.tenant, pick_api(sim, dev.apis), ip=ip, ua=dev.user_agent, device=dev,
                      token=token, nonce=sim.nonce() if dev.dpop_jkt else None, key=dev.sub, labels=labels)
        t += sim.lognormal(6.0, 0.6)
