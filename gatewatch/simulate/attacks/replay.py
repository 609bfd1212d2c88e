"""Replay scenarios: a captured DPoP request or single-use token sent again, a stolen access token used
from a second client context, a rotated refresh token presented again.

Each runs the victim's own (unlabelled) session and injects the intruder's (labelled) events into it.
"""

from __future__ import annotations

from collections.abc import Iterator

from gatewatch.simulate.attacks._common import (copy_request, intruder_ip, is_user, merge, reserve, tool_ua,
                                                upkeep, uses_token)
from gatewatch.simulate.context import Item, Sim
from gatewatch.simulate.model import AttackRun
from gatewatch.simulate.requests import pick_api, request
from gatewatch.simulate.traffic import session_ip, user_session


def replay_nonce(sim: Sim, t0: float, run: AttackRun) -> Iterator[Item]:
    """A DPoP-bound request captured and replayed verbatim (same proof `jti`, same token) seconds
    later from another network; sometimes instead a single-use (`use: once`) token used twice."""
    rng = sim.rng
    dev = reserve(sim, families=("mobile", "sdk"), pred=lambda d: d.dpop_jkt is not None)
    if dev is None or rng.random() < 0.2:
        if dev is not None:
            dev.busy -= 1
        yield from _single_use_replay(sim, t0, run)
        return
    labels = run.labels("subject", dev.sub)
    ip = intruder_ip(sim)
    state = {"seen": 0, "target": rng.randint(1, 3)}

    def hook(item: Item) -> list[Item]:
        if state["seen"] >= state["target"] or not uses_token(item) or "nonce" not in item[1].event:
            return []
        state["seen"] += 1
        if state["seen"] < state["target"]:
            return []
        out, t = [], item[0]
        for _ in range(rng.randint(1, 4)):
            t += rng.uniform(2.0, 40.0)
            out.append(copy_request(sim, item, t, ip=ip, labels=labels, status=rng.choice((None, None, 401))))
        return out

    yield from merge(user_session(sim, dev, t0, actions=rng.randint(6, 14)), hook)
    dev.busy -= 1


def _single_use_replay(sim: Sim, t0: float, run: AttackRun) -> Iterator[Item]:
    rng, broker = sim.rng, sim.tokens
    dev = reserve(sim, families=("browser", "mobile"), pred=is_user) or reserve(sim)
    assert dev is not None
    ip, _ = session_ip(sim, dev, t0)
    claims = broker.claims(dev, int(t0), lifetime=300, use="once")
    token = broker.mint(claims)
    yield sim.token_event(t0, dev.tenant, "issued", sub=dev.sub, client_id=dev.client_id, token=token)
    t = t0 + rng.uniform(1.0, 10.0)
    used = request(sim, t, dev.tenant, pick_api(sim, dev.apis), ip=ip, ua=dev.user_agent, device=dev,
                   token=token, key=dev.sub, status=200)
    yield used
    labels = run.labels("subject", dev.sub)
    attacker = intruder_ip(sim)
    for _ in range(rng.randint(1, 3)):
        t += rng.uniform(3.0, 60.0)
        yield copy_request(sim, used, t, ip=attacker, labels=labels)
    dev.busy -= 1


def replay_token_context(sim: Sim, t0: float, run: AttackRun) -> Iterator[Item]:
    """A stolen bearer token used from a hosting provider with a scripting tool, while the victim keeps
    using it from home."""
    rng = sim.rng
    dev = reserve(sim, families=("browser",), pred=lambda d: is_user(d) and d.dpop_jkt is None) or reserve(
        sim, families=("browser", "sdk", "mobile"))
    assert dev is not None
    tenant, labels = dev.tenant, run.labels("subject", dev.sub)
    ip, ua = intruder_ip(sim), tool_ua(sim)
    apis = tenant.api_mix("browser")
    started = []

    def hook(item: Item) -> list[Item]:
        if started or not uses_token(item):
            return []
        started.append(item)
        token, exp = dev.token, dev.exp
        room = exp - 5.0 - item[0]
        t = item[0] + rng.uniform(3.0, max(4.0, min(60.0, room / 3)))
        out = []
        for _ in range(rng.randint(5, 25)):
            if t > exp - 5.0:
                break
            out.append(request(sim, t, tenant, pick_api(sim, apis), ip=ip, ua=ua, token=token, key=dev.sub,
                               labels=labels))
            t += sim.lognormal(8.0, 1.0)
        return out

    yield from merge(user_session(sim, dev, t0, actions=rng.randint(10, 20)), hook)
    dev.busy -= 1


def replay_refresh_reuse(sim: Sim, t0: float, run: AttackRun) -> Iterator[Item]:
    """The victim's refresh token rotates normally; minutes later the stolen old one is presented
    from elsewhere and the authorization server hands out a new token pair, which the intruder uses."""
    rng, broker = sim.rng, sim.tokens
    dev = reserve(sim, families=("browser", "mobile", "sdk"), pred=is_user)
    assert dev is not None
    tenant, labels = dev.tenant, run.labels("subject", dev.sub)
    ip, _ = session_ip(sim, dev, t0)
    t = yield from upkeep(sim, dev, t0, ip)
    if dev.refresh_jti is None:  # a grant adopted without refresh token: log in properly first
        for item in broker.login(dev, t, ip):
            yield item
            t = item[0] + 0.1
    stolen = dev.refresh_jti
    assert stolen is not None
    t += rng.uniform(1.0, 30.0)
    for item in broker.refresh(dev, t, ip, race=False):
        yield item
        t = item[0] + rng.uniform(0.05, 0.3)
    # the intruder, later, from a hosting provider
    ta = t + rng.uniform(120.0, 1500.0)
    aip, aua = intruder_ip(sim), tool_ua(sim)
    att = [sim.access(ta, tenant, ip=aip, ua=aua, method="POST", path="/oauth/token", route="auth", status=200,
                      latency_ms=sim.lognormal(85.0, 0.4), bytes_in=int(sim.lognormal(420, 0.2)),
                      bytes_out=int(sim.lognormal(1_900, 0.2)), labels=labels)]
    claims = broker.claims(dev, int(ta))
    token = broker.mint(claims)
    ta += rng.uniform(0.005, 0.04)
    thief_refresh = sim.jti()
    att.append(sim.token_event(ta, tenant, "refreshed", sub=dev.sub, client_id=dev.client_id,
                               presented_jti=stolen, issued_jti=thief_refresh, labels=labels))
    att.append(sim.token_event(ta + 0.002, tenant, "issued", sub=dev.sub, client_id=dev.client_id,
                               token=token, refresh_jti=thief_refresh, labels=labels))
    for _ in range(rng.randint(2, 8)):
        ta += sim.lognormal(15.0, 0.8)
        if ta > claims["exp"] - 5:
            break
        att.append(request(sim, ta, tenant, pick_api(sim, tenant.api_mix("browser")), ip=aip, ua=aua,
                           token=token, key=dev.sub, labels=labels))
    yield from merge(user_session(sim, dev, t, actions=rng.randint(3, 8), ip=ip), extra=att)
    dev.busy -= 1
